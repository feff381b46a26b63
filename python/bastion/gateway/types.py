"""Plain data passed between the Gateway, its backends and its callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the logprobs module pulls in torch; a Gateway over remote backends never needs it
    from bastion.sampling.logprobs import TokenLogprobs
    from bastion.sampling.params import SamplingParams

Message = dict[str, Any]


@dataclass(frozen=True)
class BackendRequest:
    """What a backend is asked to generate.

    Exactly one of ``prompt`` (raw completion) and ``messages`` (chat) is set. ``continuation`` is
    text the client has already received from an earlier backend: the backend must generate what
    comes *after* it (prompt + continuation), so the client sees one continuous stream.
    ``params.max_tokens`` is already reduced by the tokens sent before. ``tenant`` isolates the
    prefix cache of a local engine per tenant (no cross-tenant cache hits, so no timing side channel).
    """

    request_id: str
    params: SamplingParams
    prompt: str | None = None
    messages: list[Message] | None = None
    continuation: str = ""
    priority: int = 0
    tenant: str | None = None  # a local engine salts its prefix cache with it: no cross-tenant hits


@dataclass(frozen=True)
class BackendChunk:
    """A piece of a backend's answer.

    ``num_tokens`` is how many output tokens this chunk stands for (``len(token_ids)`` for a local
    engine; an upstream's best knowledge otherwise). The last chunk carries ``finish_reason`` and,
    when known, ``prompt_tokens`` and scheduler facts in ``metrics`` (queue_time_s, preemptions).
    ``logprobs`` (when ``params.logprobs`` asked for them and the backend can give them) is aligned
    one-to-one with ``token_ids``: one ``TokenLogprobs`` per token; None when the backend gave none.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    num_tokens: int = 0
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    metrics: dict[str, float] | None = None
    logprobs: tuple[TokenLogprobs, ...] | None = None


@dataclass(frozen=True)
class BackendHealth:
    """Engine-health signals a circuit breaker can trip on (local engines report them)."""

    kv_usage: float
    queue_time_s: float
    preemptions_per_s: float


@dataclass(frozen=True)
class GatewayDelta:
    """One increment of a streamed answer.

    ``text`` and ``token_ids`` are new since the previous delta (token ids only from backends that
    expose them); ``logprobs`` holds one ``TokenLogprobs`` per id of ``token_ids`` (None when the
    backend gave none: not asked for, or a backend that cannot). Like the ids, logprobs stop after an
    output guardrail redacted text (they would reveal it). The last delta has ``finished=True``, the
    ``finish_reason`` (``"content_filter"`` when a guardrail stopped the answer, then ``refusal`` says
    why), the audit ``outcome`` and ``audit_id``.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    backend: str | None = None
    finished: bool = False
    finish_reason: str | None = None
    refusal: str | None = None
    audit_id: str | None = None
    outcome: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    logprobs: tuple[TokenLogprobs, ...] | None = None


@dataclass
class GatewayResult:
    """The whole answer of ``Gateway.generate``.

    ``text`` is the answer, or the refusal message when a guardrail blocked the output
    (``refused=True``, ``finish_reason="content_filter"``). ``backend`` names who produced the
    final part; ``outcome`` is the audit outcome (served, fallback, blocked). ``logprobs`` are the
    deltas' logprobs in order: aligned with ``token_ids`` when every backend that answered gave them,
    None when none did (after a fallback from, e.g., an ``OpenAIBackend`` only the local part has them).
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    backend: str | None = None
    audit_id: str | None = None
    outcome: str = "served"
    refused: bool = False
    logprobs: list[TokenLogprobs] | None = None
