"""The audit record: one per request served (or refused) by the Gateway, whatever the outcome.

Fields say who asked (user, tenant), when (UTC start plus durations), which model produced the
answer (name, version, weights hash), with which sampling parameters, which backends were tried and
why each attempt ended, what the breakers and guardrails decided, and the scheduler facts only an
in-process runtime has (queue time, TTFT, preemptions).

Prompt and output go in by policy: ``"hashed"`` (the default) stores the sha256 of the text plus a
redacted copy (secrets and PII removed, see ``bastion.audit.redact``); ``"full"`` stores the text as is.

``seq``, ``prev_hash`` and ``hash`` are filled in by ``AuditLog`` when the record joins the chain.
With encryption on (crypto-shredding, ``bastion.audit.sealing``) the stored record has ``user``,
``prompt``, ``output`` and ``metadata.end_user`` null / absent and carries them encrypted in ``sealed``.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from bastion.audit.redact import redact

Outcome = Literal["served", "fallback", "blocked", "rate_limited", "failed", "aborted", "timeout"]
AttemptOutcome = Literal[
    "ok", "error", "timeout", "open_breaker", "overloaded", "context_overflow", "blocked", "aborted", "hedge_lost"
]
ContentMode = Literal["hashed", "full"]
SCHEMA_VERSION = 1


def utc_now_iso() -> str:
    """The current UTC time as an ISO 8601 string with microseconds and an explicit offset."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class ContentPolicy(BaseModel):
    """How prompt and output text enter the trail.

    ``hash_key`` (optional) turns the plain sha256 into an HMAC-SHA256, so short prompts cannot be
    recovered by hashing guesses; whoever holds the key can still check a given text.
    """

    model_config = ConfigDict(frozen=True)

    mode: ContentMode = "hashed"
    hash_key: bytes | None = None

    def digest(self, text: str) -> str:
        """The hex digest recorded for ``text`` under this policy."""
        data = text.encode("utf-8", "surrogatepass")
        if self.hash_key is not None:
            return hmac.new(self.hash_key, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()

    def capture(self, text: str) -> TextRecord:
        """Build the ``TextRecord`` stored for ``text``."""
        if self.mode == "full":
            return TextRecord(sha256=self.digest(text), chars=len(text), text=text)
        return TextRecord(sha256=self.digest(text), chars=len(text), redacted=redact(text))


class TextRecord(BaseModel):
    """A prompt or output as stored: always its digest, plus either the text or a redacted copy."""

    sha256: str = Field(description="hex sha256 (or HMAC-SHA256 with the policy key) of the UTF-8 text")
    chars: int = Field(ge=0, description="length of the original text in characters")
    text: str | None = Field(None, description="the text in clear (content policy 'full' only)")
    redacted: str | None = Field(None, description="text with secrets/cards/e-mails removed ('hashed' policy)")


class ModelIdentity(BaseModel):
    """Which model produced the output: provable by weights hash, not only by a label."""

    name: str
    version: str | None = None
    weights_sha256: str | None = None
    numerics: str | None = Field(None, description="how a local engine computed (device, dtype, kernel backend, "
                                                   "GGUF block types, activation precision)")


class BackendAttempt(BaseModel):
    """One try on one backend (a retry on the same backend is a new attempt)."""

    backend: str
    outcome: AttemptOutcome
    error_class: str | None = Field(None, description="exception type name when the attempt failed")
    error: str | None = Field(None, description="redacted error message")
    duration_s: float = Field(ge=0)
    breaker_state: str | None = Field(None, description="breaker state when the attempt was admitted or refused")
    tokens_sent: int = Field(0, ge=0, description="output tokens this attempt released to the client")
    hedge: bool = Field(False, description="started as a hedge alongside a slow attempt (not by the route)")


class GuardDecisionRecord(BaseModel):
    """A guardrail's verdict on the input or the output."""

    stage: Literal["input", "output"]
    guard: str
    action: str = Field(description="allow | redact | block | flag | ... as reported by the guard")
    reason: str | None = None
    backend: str | None = Field(None, description="the backend whose output was judged (output stage)")


class SealedContent(BaseModel):
    """A record's personal content (user, prompt, output, end user) encrypted under its subject's key."""

    v: int = Field(description="sealing format version")
    key_ref: str = Field(description="random reference of the content key in the key store (names no one)")
    period: str = Field(description="UTC day of the key: destroyed with the day when retention ends")
    nonce: str = Field(description="base64 AES-GCM nonce")
    ciphertext: str = Field(description="base64 AES-256-GCM of the canonical JSON of the sealed fields")


class AuditRecord(BaseModel):
    """One request's audit entry. Published as docs/audit_record.schema.json."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    record_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    request_id: str
    time: str = Field(default_factory=utc_now_iso, description="UTC ISO 8601 time the request arrived")
    finished_at: str | None = Field(None, description="UTC ISO 8601 time the request ended")
    user: str | None = None
    tenant: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    model: ModelIdentity | None = Field(None, description="model of the backend that answered")
    backend: str | None = Field(None, description="name of the backend that answered")
    sampling: dict[str, JsonValue] = Field(default_factory=dict, description="sampling parameters as sent")
    content_policy: ContentMode = "hashed"
    prompt: TextRecord | None = None
    output: TextRecord | None = None
    prompt_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)

    attempts: list[BackendAttempt] = Field(default_factory=list)
    breaker_states: dict[str, str] = Field(default_factory=dict, description="backend -> state at the end")
    guardrail_decisions: list[GuardDecisionRecord] = Field(default_factory=list)
    fallback_at_token: int | None = Field(None, description="output tokens sent before a mid-stream failover")
    hedges: int = Field(0, ge=0, description="hedge attempts started (the losers have outcome hedge_lost)")

    queue_time_s: float | None = None
    ttft_s: float | None = None
    total_time_s: float | None = None
    preemptions: int = Field(0, ge=0)
    finish_reason: str | None = None
    outcome: Outcome
    error: str | None = Field(None, description="redacted reason when the outcome is not served/fallback")

    sealed: SealedContent | None = Field(None, description="personal content, encrypted (AuditLog encryption=)")

    seq: int | None = Field(None, description="position in the chain, from 0 (set by AuditLog)")
    prev_hash: str | None = Field(None, description="hash of the previous record (64 zeros for the first)")
    hash: str | None = Field(None, description="sha256 of the canonical JSON of this record without 'hash'")

    def body(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, chain fields included."""
        return self.model_dump(mode="json")
