"""Configuration of a circuit breaker (Resilience4j's knobs, snake_cased) and the engine-health policy."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

ExceptionPredicate = Callable[[BaseException], bool]


def _require(condition: bool, field: str, message: str) -> None:
    """Raise a ValueError naming ``field`` when ``condition`` is false."""
    if not condition:
        raise ValueError(f"{field}: {message}")


def _record_every_exception(exc: BaseException) -> bool:
    """Default record predicate: every ``Exception`` counts as a failure (Resilience4j's default)."""
    return isinstance(exc, Exception)


def _ignore_no_exception(exc: BaseException) -> bool:
    """Default ignore predicate: nothing is ignored."""
    return False


@dataclass(frozen=True)
class HealthPolicy:
    """When an engine-health sample counts as unhealthy.

    :meth:`CircuitBreaker.record_health` turns each sample into one outcome: an unhealthy sample is
    recorded as a *slow successful call* (so it drives the slow-call rate, never the failure rate), a
    healthy one is recorded as a fast success only when ``count_healthy_samples`` is true (otherwise the
    real calls alone form the denominator). A limit of ``None`` disables that signal.
    """

    max_kv_usage: float | None = 0.98
    max_queue_time_s: float | None = 10.0
    max_preemptions_per_s: float | None = 1.0
    count_healthy_samples: bool = False

    def __post_init__(self) -> None:
        if self.max_kv_usage is not None:
            _require(0 < self.max_kv_usage <= 1, "max_kv_usage", "must be in (0, 1]")
        for name in ("max_queue_time_s", "max_preemptions_per_s"):
            value = getattr(self, name)
            if value is not None:
                _require(value >= 0, name, "must be >= 0")

    def violations(self, kv_usage: float, queue_time_s: float, preemptions_per_s: float) -> list[str]:
        """Names of the limits this sample exceeds (empty when healthy)."""
        checks = (("kv_usage", kv_usage, self.max_kv_usage),
                  ("queue_time_s", queue_time_s, self.max_queue_time_s),
                  ("preemptions_per_s", preemptions_per_s, self.max_preemptions_per_s))
        return [name for name, value, limit in checks if limit is not None and value > limit]


@dataclass(frozen=True)
class BreakerConfig:
    """Settings of one :class:`~bastion.resilience.breaker.CircuitBreaker`.

    Defaults are Resilience4j's. Times are seconds, rates are percentages in (0, 100].

    * ``sliding_window_type``: ``"count"`` keeps the last ``sliding_window_size`` outcomes; ``"time"`` keeps
      the outcomes of the last ``sliding_window_size`` seconds in one-second buckets.
    * ``minimum_number_of_calls``: no decision is taken before this many outcomes are buffered. For a
      count window it is clamped to the window size, as Resilience4j does.
    * ``wait_duration_in_open_state`` is multiplied by ``open_backoff_multiplier`` for every consecutive
      re-open (HALF_OPEN → OPEN) and capped at ``max_wait_duration_in_open_state``; closing resets it.
    * ``max_wait_duration_in_half_open_state`` (0 = off) bounds the time spent in HALF_OPEN, so a probe
      that never reports back cannot wedge the breaker; then it moves to
      ``transition_to_state_after_wait_duration``.
    * ``record_exception`` / ``ignore_exception``: an ignored exception counts as neither success nor
      failure and frees its permit; an exception that is not recorded counts as a success. When both
      match, *ignore wins* (Resilience4j's ``ignoreExceptionsPrecedenceEnabled=true``).
    * ``health_policy`` decides which engine-health samples count as slow calls
      (see :meth:`CircuitBreaker.record_health`).
    """

    sliding_window_type: Literal["count", "time"] = "count"
    sliding_window_size: int = 100
    minimum_number_of_calls: int = 100
    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration_threshold: float = 60.0
    wait_duration_in_open_state: float = 60.0
    open_backoff_multiplier: float = 1.0
    max_wait_duration_in_open_state: float | None = None
    permitted_number_of_calls_in_half_open_state: int = 10
    max_wait_duration_in_half_open_state: float = 0.0
    transition_to_state_after_wait_duration: Literal["open", "closed"] = "open"
    automatic_transition_from_open_to_half_open: bool = False
    record_exception: ExceptionPredicate = _record_every_exception
    ignore_exception: ExceptionPredicate = _ignore_no_exception
    health_policy: HealthPolicy = field(default_factory=HealthPolicy)

    def __post_init__(self) -> None:
        _require(self.sliding_window_type in ("count", "time"), "sliding_window_type",
                 f"must be 'count' or 'time', got {self.sliding_window_type!r}")
        _require(self.sliding_window_size >= 1, "sliding_window_size", "must be >= 1")
        _require(self.minimum_number_of_calls >= 1, "minimum_number_of_calls", "must be >= 1")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            value = getattr(self, name)
            _require(0 < value <= 100, name, f"must be a percentage in (0, 100], got {value}")
        _require(self.slow_call_duration_threshold > 0, "slow_call_duration_threshold", "must be > 0")
        _require(self.wait_duration_in_open_state > 0, "wait_duration_in_open_state", "must be > 0")
        _require(self.open_backoff_multiplier >= 1, "open_backoff_multiplier", "must be >= 1")
        if self.max_wait_duration_in_open_state is not None:
            _require(self.max_wait_duration_in_open_state >= self.wait_duration_in_open_state,
                     "max_wait_duration_in_open_state", "must be >= wait_duration_in_open_state")
        _require(self.permitted_number_of_calls_in_half_open_state >= 1,
                 "permitted_number_of_calls_in_half_open_state", "must be >= 1")
        _require(self.max_wait_duration_in_half_open_state >= 0, "max_wait_duration_in_half_open_state",
                 "must be >= 0 (0 disables it)")
        _require(self.transition_to_state_after_wait_duration in ("open", "closed"),
                 "transition_to_state_after_wait_duration", "must be 'open' or 'closed'")
        _require(callable(self.record_exception), "record_exception", "must be callable")
        _require(callable(self.ignore_exception), "ignore_exception", "must be callable")
        _require(isinstance(self.health_policy, HealthPolicy), "health_policy", "must be a HealthPolicy")

    @property
    def effective_minimum_calls(self) -> int:
        """Minimum buffered outcomes before the closed-state window is judged (clamped for count windows)."""
        if self.sliding_window_type == "count":
            return min(self.minimum_number_of_calls, self.sliding_window_size)
        return self.minimum_number_of_calls

    def open_duration(self, consecutive_opens: int) -> float:
        """How long the breaker stays OPEN the ``consecutive_opens``-th time in a row (1 = first)."""
        exponent = max(consecutive_opens - 1, 0)
        cap = self.max_wait_duration_in_open_state
        # Check the growth in log space first so a long outage cannot overflow the float power.
        if exponent * math.log(self.open_backoff_multiplier) > 600:
            return cap if cap is not None else math.inf
        duration = self.wait_duration_in_open_state * self.open_backoff_multiplier ** exponent
        return duration if cap is None else min(duration, cap)
