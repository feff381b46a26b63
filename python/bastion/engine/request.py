"""What a request is inside the engine: its time limits, the validated form the input processor
makes of it, and the engine's Python-side state of it.

The C++ scheduler owns the token bookkeeping and KV blocks; ``EngineRequest`` owns what only Python
needs: sampling state, detokenized text, stop decisions, timestamps and what was already streamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.engine.output_processor import StopChecker
from bastion.engine.outputs import FinishReason, RequestMetrics
from bastion.sampling.params import SamplingParams

if TYPE_CHECKING:  # they pull in torch, and ``bastion.Deadlines`` must stay a light import
    from bastion.sampling.grammar.matcher import GrammarMatcher
    from bastion.sampling.state import SequenceState


@dataclass(frozen=True)
class Deadlines:
    """Per-request time limits in seconds, measured from arrival; None = no limit.

    ``queue``: until the scheduler first runs the request; ``ttft``: until the first token;
    ``total``: until the request finishes. On expiry the request is aborted (blocks freed) with
    ``finish_reason="timeout"`` and ``metrics.timeout_reason`` naming which limit fired.
    """

    queue: float | None = None
    ttft: float | None = None
    total: float | None = None

    def __post_init__(self) -> None:
        for name in ("queue", "ttft", "total"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"deadline.{name}: must be a positive number of seconds, got {value!r}")

    def expired(self, metrics: RequestMetrics, now: float) -> str | None:
        """Which limit has passed for a request with these ``metrics`` (None if none)."""
        age = now - metrics.arrival_time
        if self.queue is not None and metrics.first_scheduled_time is None and age > self.queue:
            return "queue"
        if self.ttft is not None and metrics.first_token_time is None and age > self.ttft:
            return "ttft"
        if self.total is not None and age > self.total:
            return "total"
        return None


@dataclass(frozen=True)
class EngineCoreRequest:
    """A request the input processor has checked, ready for ``EngineCore.add_request`` (vLLM's name).

    ``prompt`` is the text the ids came from (None for a token-id prompt); ``params.max_tokens`` is
    already cut to the room the context leaves. ``deadlines`` are enforced by ``AsyncLLM``'s engine thread.
    """

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float
    priority: int = 0
    cache_salt: str | None = None
    deadlines: Deadlines | None = None


@dataclass
class EngineRequest:
    """One request inside the engine, from ``add_request`` until its final output is taken."""

    request_id: str
    core_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    metrics: RequestMetrics
    seq: SequenceState
    stop: StopChecker
    logprobs: list[dict[int, float]] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    # how much of the output the caller has already been given (for "delta" outputs)
    sent_tokens: int = 0
    sent_chars: int = 0
    # structured outputs: where the request stands in its grammar (set once the grammar is compiled)
    grammar: GrammarMatcher | None = None
    # False while the request waits outside the C++ scheduler (for its grammar to compile)
    in_scheduler: bool = True

    @property
    def output_token_ids(self) -> list[int]:
        """Tokens generated so far (the sampler's own list: one source of truth)."""
        return self.seq.output_token_ids

    @property
    def text(self) -> str:
        """Output text released so far (stop strings cut, held-back stop prefixes not yet included)."""
        return self.stop.text

    @property
    def finished(self) -> bool:
        """True once a finish reason is set."""
        return self.finish_reason is not None

    def finish(self, reason: FinishReason, when: float, stop_reason: str | int | None = None) -> None:
        """Mark the request finished (first reason wins)."""
        if self.finish_reason is None:
            self.finish_reason = reason
            self.stop_reason = stop_reason
            self.metrics.finish_time = when
