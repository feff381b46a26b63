"""The engine's Python-side state of one request, and how it turns into a ``RequestOutput``.

The C++ scheduler owns the token bookkeeping and KV blocks; this object owns what only Python
needs: sampling state, detokenized text, stop decisions, timestamps and what was already streamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.engine.outputs import FinishReason, RequestMetrics, RequestOutput
from bastion.sampling.params import SamplingParams
from bastion.sampling.state import SequenceState
from bastion.sampling.stop import StopChecker


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
    deadlines: dict[str, float] = field(default_factory=dict)

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

    def make_output(self) -> RequestOutput | None:
        """The output due now under ``params.output_kind``; None when there is nothing to send."""
        kind = self.params.output_kind
        if kind == "final_only" and not self.finished:
            return None
        tokens = self.output_token_ids
        if kind == "delta":
            new_tokens, new_text = tokens[self.sent_tokens:], self.text[self.sent_chars:]
            if not new_tokens and not new_text and not self.finished:
                return None
            logprobs = self.logprobs[self.sent_tokens:] if self.logprobs is not None else None
        else:
            new_tokens, new_text, logprobs = list(tokens), self.text, self.logprobs
        self.sent_tokens, self.sent_chars = len(tokens), len(self.text)
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            text=new_text,
            token_ids=list(new_tokens),
            finished=self.finished,
            finish_reason=self.finish_reason,
            metrics=self.metrics,
            stop_reason=self.stop_reason,
            logprobs=list(logprobs) if logprobs is not None else None,
            num_total_output_tokens=len(tokens),
        )
