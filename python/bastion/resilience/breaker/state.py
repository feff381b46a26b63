"""Value types of the circuit breaker: states, transition events, metrics and the rejection error."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bastion.errors import BastionError


class BreakerState(str, enum.Enum):
    """Resilience4j's six states.

    CLOSED, OPEN and HALF_OPEN form the automatic cycle. DISABLED always permits and records nothing,
    FORCED_OPEN always rejects, METRICS_ONLY always permits and records but never trips; those three
    are entered and left only by hand.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"
    FORCED_OPEN = "forced_open"
    METRICS_ONLY = "metrics_only"

    @property
    def records_outcomes(self) -> bool:
        """Whether finished calls are counted in this state."""
        return self in (BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.METRICS_ONLY)


@dataclass(frozen=True)
class StateTransition:
    """A state change, as passed to listeners. ``time`` is a reading of the breaker's clock."""

    breaker: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    time: float


@dataclass(frozen=True)
class BreakerMetrics:
    """A consistent snapshot of a breaker's current window.

    Rates are percentages over the buffered calls of the current state's window (the half-open probe
    window in HALF_OPEN); they are 0 when nothing is buffered. ``not_permitted_calls`` counts rejections
    since the last :meth:`~bastion.resilience.breaker.CircuitBreaker.reset`.
    """

    state: BreakerState
    failure_rate: float
    slow_call_rate: float
    buffered_calls: int
    failed_calls: int
    slow_calls: int
    not_permitted_calls: int


class CallNotPermitted(BastionError):
    """The breaker refused a call (OPEN, FORCED_OPEN, or no half-open probe slot left).

    ``remaining_open_s`` is the time until the breaker lets a probe through, when known (OPEN state);
    it is ``None`` when the breaker is FORCED_OPEN or waiting on its half-open probes.
    """

    def __init__(self, breaker_name: str, state: BreakerState, remaining_open_s: float | None) -> None:
        """Build the error with a message naming the breaker, its state and the remaining wait."""
        wait = f"; retry in {remaining_open_s:.3f}s" if remaining_open_s is not None else ""
        super().__init__(f"circuit breaker {breaker_name!r} is {state.value}: call not permitted{wait}")
        self.breaker_name = breaker_name
        self.state = state
        self.remaining_open_s = remaining_open_s
