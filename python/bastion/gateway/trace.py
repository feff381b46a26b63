"""Per-request bookkeeping of the Gateway, turned into exactly one ``AuditRecord`` at the end."""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.audit.record import (
    AuditRecord,
    BackendAttempt,
    ContentPolicy,
    GuardDecisionRecord,
    ModelIdentity,
    utc_now_iso,
)
from bastion.audit.redact import redact
from bastion.gateway.types import BackendChunk

if TYPE_CHECKING:
    from bastion.sampling.params import SamplingParams

# error class -> attempt outcome recorded in the audit trail
_ATTEMPT_OUTCOME = {"timeout": "timeout", "overloaded": "overloaded", "context_window": "context_overflow",
                    "open_breaker": "open_breaker", "guardrail": "blocked"}


def attempt_outcome(error_class: str) -> str:
    """The audit ``BackendAttempt.outcome`` for a failure of ``error_class``."""
    return _ATTEMPT_OUTCOME.get(error_class, "error")


def sampling_dict(params: SamplingParams) -> dict[str, Any]:
    """SamplingParams as JSON-ready values (tuples become lists; ``structured_outputs`` a dict of its
    fields, its schema as the caller gave it: a dict or its JSON text)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


@dataclass
class RequestTrace:
    """Everything the Gateway learns about one request while serving it."""

    request_id: str
    user: str | None = None
    tenant: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    prompt_text: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)
    audit_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: str = field(default_factory=utc_now_iso)
    started: float = field(default_factory=time.monotonic)

    attempts: list[BackendAttempt] = field(default_factory=list)
    decisions: list[GuardDecisionRecord] = field(default_factory=list)
    output_text: str = ""  # what the client has received
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float | None = None
    backend: str | None = None
    model: ModelIdentity | None = None
    queue_time_s: float | None = None
    preemptions: int = 0
    fallback_at_token: int | None = None
    hedges: int = 0  # hedge attempts started
    finish_reason: str | None = None
    outcome: str | None = None
    error: str | None = None
    delivered: bool = False  # the final delta reached the client

    def elapsed(self) -> float:
        """Seconds since the request arrived."""
        return time.monotonic() - self.started

    def add_attempt(self, backend: str, outcome: str, started: float, *, exc: BaseException | None = None,
                    breaker_state: str | None = None, tokens_sent: int = 0, hedge: bool = False) -> None:
        """Record one backend attempt that began at monotonic time ``started`` (``hedge``: started as one)."""
        self.attempts.append(BackendAttempt(
            backend=backend, outcome=outcome, duration_s=max(0.0, time.monotonic() - started),
            error_class=type(exc).__name__ if exc is not None else None,
            error=redact(str(exc))[:500] if exc is not None else None,
            breaker_state=breaker_state, tokens_sent=tokens_sent, hedge=hedge,
        ))

    def take(self, text: str, token_ids: tuple[int, ...], num_tokens: int) -> bool:
        """Account for output released to the client; True when it is the first text (TTFT)."""
        first = self.ttft_s is None and bool(text)
        if first:
            self.ttft_s = self.elapsed()
        self.output_text += text
        self.token_ids.extend(token_ids)
        self.output_tokens += num_tokens
        return first

    def complete(self, backend: str, model: ModelIdentity, finish_reason: str | None,
                 final_chunk: BackendChunk | None) -> None:
        """The request was served by ``backend``: record who, why it ended and the scheduler facts."""
        if final_chunk is not None:
            self.prompt_tokens = final_chunk.prompt_tokens or self.prompt_tokens
            metrics = final_chunk.metrics or {}
            self.queue_time_s = metrics.get("queue_time_s", self.queue_time_s)
            self.preemptions += int(metrics.get("preemptions", 0))
        self.backend, self.model, self.finish_reason = backend, model, finish_reason
        # a hedge that lost the race is no failure: the request was still served first time
        served_first = bool(self.attempts) and all(a.outcome == "hedge_lost" for a in self.attempts[:-1])
        self.outcome = "served" if served_first else "fallback"
        self.delivered = True

    def refuse(self) -> None:
        """The output was blocked on every backend: the client gets a refusal."""
        self.outcome, self.finish_reason, self.delivered = "blocked", "content_filter", True
        self.error = "output blocked by guardrails"

    def fail(self, outcome: str, exc: BaseException) -> None:
        """Mark the request as ended by ``exc`` with audit ``outcome``."""
        self.outcome = outcome
        self.error = redact(f"{type(exc).__name__}: {exc}")[:1000]

    def to_record(self, policy: ContentPolicy, breaker_states: dict[str, str]) -> AuditRecord:
        """The audit record of this request (call once, when it is over)."""
        return AuditRecord(
            record_id=self.audit_id, request_id=self.request_id, time=self.started_at, finished_at=utc_now_iso(),
            user=self.user, tenant=self.tenant, metadata=self.metadata, model=self.model, backend=self.backend,
            sampling=self.sampling, content_policy=policy.mode, prompt=policy.capture(self.prompt_text),
            output=policy.capture(self.output_text), prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens, attempts=self.attempts, breaker_states=breaker_states,
            guardrail_decisions=self.decisions, fallback_at_token=self.fallback_at_token, hedges=self.hedges,
            queue_time_s=self.queue_time_s, ttft_s=self.ttft_s, total_time_s=self.elapsed(),
            preemptions=self.preemptions, finish_reason=self.finish_reason, outcome=self.outcome or "failed",
            error=self.error,
        )
