"""What a request gives back: ``RequestOutput`` and its timing ``RequestMetrics``.

The engine core records only timestamps and counts; the intervals (queue time, TTFT, ...) are
computed here on demand, outside the hot loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "abort", "error", "timeout"]


@dataclass
class RequestMetrics:
    """Timestamps (``time.monotonic()`` seconds) and counts of one request's life."""

    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finish_time: float | None = None
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    num_generated_tokens: int = 0
    num_forced_tokens: int = 0  # of those, appended without a model step (structured outputs' jump-forward)
    timeout_reason: str | None = None  # "queue", "ttft" or "total" when finish_reason == "timeout"
    error: str | None = None  # the message when finish_reason == "error"

    @property
    def queue_time(self) -> float | None:
        """Seconds from arrival until the scheduler first gave the request tokens."""
        return None if self.first_scheduled_time is None else self.first_scheduled_time - self.arrival_time

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds from arrival to the first generated token."""
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def e2e_latency(self) -> float | None:
        """Seconds from arrival to the end of the request."""
        return None if self.finish_time is None else self.finish_time - self.arrival_time

    @property
    def time_per_output_token(self) -> float | None:
        """Mean seconds between generated tokens after the first one."""
        if self.first_token_time is None or self.last_token_time is None or self.num_generated_tokens < 2:
            return None
        return (self.last_token_time - self.first_token_time) / (self.num_generated_tokens - 1)


@dataclass
class RequestOutput:
    """The output of one request, cumulative or a delta depending on ``SamplingParams.output_kind``.

    ``text``/``token_ids`` hold the whole output so far ("cumulative", "final_only") or only what is
    new since the previous output of the same request ("delta").
    """

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    text: str
    token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None
    metrics: RequestMetrics
    stop_reason: str | int | None = None
    logprobs: list[dict[int, float]] | None = None
    num_total_output_tokens: int = 0  # whatever the output kind, all tokens generated so far
    extra: dict = field(default_factory=dict)
