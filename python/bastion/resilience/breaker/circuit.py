"""A rate-based circuit breaker with Resilience4j semantics, safe under asyncio and threads.

Outcomes land in a sliding window (by count or by time); once ``minimum_number_of_calls`` are buffered,
a failure rate or slow-call rate at or above its threshold opens the breaker. After the open wait
(optionally growing on repeated opens) a bounded number of probes run in HALF_OPEN; their window
decides CLOSED or OPEN again. The lock is held only for short bookkeeping, never across a call, and
listeners run after it is released. Time-driven transitions (OPEN → HALF_OPEN, the half-open bound)
are applied when the breaker is next touched; no timer thread is started, so an injected clock fully
controls the machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bastion.resilience.breaker.config import BreakerConfig
from bastion.resilience.breaker.permit import BreakerGuard, Permit, PermitOutcome
from bastion.resilience.breaker.state import BreakerMetrics, BreakerState, CallNotPermitted, StateTransition
from bastion.resilience.breaker.window import CountWindow, Outcome, TimeWindow, WindowSnapshot, make_window

_log = logging.getLogger(__name__)
Listener = Callable[[StateTransition], None]


class CircuitBreaker:
    """One breaker guarding one dependency (a backend, a model replica, an engine)."""

    def __init__(self, name: str, config: BreakerConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Create a CLOSED breaker. ``clock`` must be monotonic seconds (inject a fake one in tests)."""
        if not name:
            raise ValueError("name: a circuit breaker needs a non-empty name")
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._state = BreakerState.CLOSED
        self._epoch = 0  # bumped on every transition; permits of an older epoch are stale
        self._entered_at = clock()
        self._window: CountWindow | TimeWindow = self._closed_window()
        self._open_duration = 0.0
        self._consecutive_opens = 0
        self._half_open_slots = 0
        self._not_permitted = 0

    # ----------------------------------------------------------------------------------------- calls
    def try_acquire(self) -> Permit:
        """Admit one call or raise :class:`CallNotPermitted`; report its outcome on the returned permit."""
        events: list[StateTransition] = []
        try:
            with self._lock:
                now = self._clock()
                self._apply_time_transitions(now, events, acquiring=True)
                state = self._state
                if state is BreakerState.HALF_OPEN and self._half_open_slots > 0:
                    self._half_open_slots -= 1
                elif state in (BreakerState.OPEN, BreakerState.FORCED_OPEN, BreakerState.HALF_OPEN):
                    self._not_permitted += 1
                    remaining = (self._entered_at + self._open_duration - now
                                 if state is BreakerState.OPEN else None)
                    raise CallNotPermitted(self.name, state, remaining)
                return Permit(self, self._epoch, now)
        finally:
            self._emit(events)

    def guard(self) -> BreakerGuard:
        """``async with breaker.guard() as permit:`` (or plain ``with``) around one call.

        Success, error and cancellation are reported automatically; see :class:`BreakerGuard`.
        """
        return BreakerGuard(self.try_acquire, self._clock)

    def record_health(self, kv_usage: float, queue_time_s: float, preemptions_per_s: float) -> bool:
        """Feed one engine-health sample; returns whether it was healthy.

        Per :class:`HealthPolicy`, an unhealthy sample is recorded as a slow successful call, so a
        sustained overload opens the breaker through ``slow_call_rate_threshold`` and new requests are
        shed to a fallback while in-flight ones finish. Samples are ignored in states that record
        nothing (OPEN, DISABLED, FORCED_OPEN).
        """
        violations = self.config.health_policy.violations(kv_usage, queue_time_s, preemptions_per_s)
        if violations or self.config.health_policy.count_healthy_samples:
            events: list[StateTransition] = []
            with self._lock:
                now = self._clock()
                self._apply_time_transitions(now, events, acquiring=False)
                if self._state.records_outcomes:
                    reason = "unhealthy engine: " + ", ".join(violations) if violations else ""
                    self._record(Outcome(failed=False, slow=bool(violations)), now, events, reason)
            self._emit(events)
        return not violations

    # ---------------------------------------------------------------------------- manual control
    def force_open(self) -> None:
        """Reject every call until another manual transition (FORCED_OPEN)."""
        self._manual(BreakerState.FORCED_OPEN, "manual: force_open")

    def disable(self) -> None:
        """Permit every call and record nothing (DISABLED)."""
        self._manual(BreakerState.DISABLED, "manual: disable")

    def metrics_only(self) -> None:
        """Permit every call and record outcomes, but never trip (METRICS_ONLY)."""
        self._manual(BreakerState.METRICS_ONLY, "manual: metrics_only")

    def transition_to_closed(self) -> None:
        """Close the breaker with an empty window (keeps the open-backoff history)."""
        self._manual(BreakerState.CLOSED, "manual: transition_to_closed")

    def reset(self) -> None:
        """Back to a fresh CLOSED breaker: empty window, no backoff history, rejection count zeroed."""
        with self._lock:
            self._consecutive_opens = 0
            self._not_permitted = 0
        self._manual(BreakerState.CLOSED, "reset")

    # ------------------------------------------------------------------------------- observation
    @property
    def state(self) -> BreakerState:
        """The current state (time-driven transitions are applied first)."""
        events: list[StateTransition] = []
        with self._lock:
            self._apply_time_transitions(self._clock(), events, acquiring=False)
            state = self._state
        self._emit(events)
        return state

    def metrics(self) -> BreakerMetrics:
        """Rates and counts of the current window."""
        events: list[StateTransition] = []
        with self._lock:
            now = self._clock()
            self._apply_time_transitions(now, events, acquiring=False)
            snap = self._window.snapshot(now)
            result = BreakerMetrics(self._state, snap.failure_rate, snap.slow_call_rate, snap.calls,
                                    snap.failed_calls, snap.slow_calls, self._not_permitted)
        self._emit(events)
        return result

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(StateTransition)`` after every state change (outside the breaker's lock)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop notifying ``listener``; unknown listeners are ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # ---------------------------------------------------------------------------------- internal
    def _complete(self, permit: Permit, outcome: PermitOutcome, duration_s: float,
                  exc: BaseException | None) -> None:
        events: list[StateTransition] = []
        with self._lock:
            if permit.settled:
                return
            permit.settled = True
            now = self._clock()
            self._apply_time_transitions(now, events, acquiring=False)
            if permit.epoch != self._epoch:
                pass  # admitted before the last transition: its outcome belongs to a window that is gone
            elif outcome == "release" or (exc is not None and self.config.ignore_exception(exc)):
                if self._state is BreakerState.HALF_OPEN:
                    self._half_open_slots += 1
            elif self._state.records_outcomes:
                failed = exc is not None and self.config.record_exception(exc)
                slow = duration_s > self.config.slow_call_duration_threshold
                self._record(Outcome(failed, slow), now, events, "")
        self._emit(events)

    def _record(self, outcome: Outcome, now: float, events: list[StateTransition], cause: str) -> None:
        snap = self._window.record(outcome, now)
        if self._state is BreakerState.CLOSED:
            exceeded = self._exceeded(snap, self.config.effective_minimum_calls)
            if exceeded:
                self._open(now, events, exceeded if not cause else f"{exceeded} ({cause})")
        elif self._state is BreakerState.HALF_OPEN:
            exceeded = self._exceeded(snap, self.config.permitted_number_of_calls_in_half_open_state)
            if exceeded:
                self._open(now, events, f"half-open probes: {exceeded}")
            elif snap.calls >= self.config.permitted_number_of_calls_in_half_open_state:
                self._consecutive_opens = 0
                self._transition(BreakerState.CLOSED, now, events, "half-open probes below thresholds")

    def _exceeded(self, snap: WindowSnapshot, minimum_calls: int) -> str:
        """Why ``snap`` trips the breaker ('' when it does not or too few calls are buffered)."""
        if snap.calls < minimum_calls:
            return ""
        reasons = []
        if snap.failure_rate >= self.config.failure_rate_threshold:
            reasons.append(f"failure rate {snap.failure_rate:.1f}% >= {self.config.failure_rate_threshold}%")
        if snap.slow_call_rate >= self.config.slow_call_rate_threshold:
            reasons.append(f"slow-call rate {snap.slow_call_rate:.1f}% >= {self.config.slow_call_rate_threshold}%")
        return " and ".join(reasons)

    def _apply_time_transitions(self, now: float, events: list[StateTransition], acquiring: bool) -> None:
        cfg = self.config
        if self._state is BreakerState.OPEN and now - self._entered_at >= self._open_duration:
            # Lazily on the next call, like Resilience4j; on any access when automatic is enabled.
            if acquiring or cfg.automatic_transition_from_open_to_half_open:
                self._transition(BreakerState.HALF_OPEN, now, events, "open wait elapsed")
        elif (self._state is BreakerState.HALF_OPEN and cfg.max_wait_duration_in_half_open_state > 0
              and now - self._entered_at >= cfg.max_wait_duration_in_half_open_state):
            reason = "max wait in half-open elapsed"
            if cfg.transition_to_state_after_wait_duration == "open":
                self._open(now, events, reason)
            else:
                self._transition(BreakerState.CLOSED, now, events, reason)

    def _open(self, now: float, events: list[StateTransition], reason: str) -> None:
        self._consecutive_opens += 1
        self._open_duration = self.config.open_duration(self._consecutive_opens)
        self._transition(BreakerState.OPEN, now, events, reason)

    def _manual(self, target: BreakerState, reason: str) -> None:
        events: list[StateTransition] = []
        with self._lock:
            self._transition(target, self._clock(), events, reason)
        self._emit(events)

    def _transition(self, target: BreakerState, now: float, events: list[StateTransition], reason: str) -> None:
        events.append(StateTransition(self.name, self._state, target, reason, now))
        self._state = target
        self._epoch += 1
        self._entered_at = now
        if target is BreakerState.HALF_OPEN:
            self._half_open_slots = self.config.permitted_number_of_calls_in_half_open_state
            self._window = CountWindow(self.config.permitted_number_of_calls_in_half_open_state)
        elif target in (BreakerState.CLOSED, BreakerState.METRICS_ONLY):
            self._window = self._closed_window()

    def _closed_window(self) -> CountWindow | TimeWindow:
        return make_window(self.config.sliding_window_type, self.config.sliding_window_size)

    def _emit(self, events: list[StateTransition]) -> None:
        if not events:
            return
        with self._lock:
            listeners = list(self._listeners)
        for event in events:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:  # a broken listener must not break admission
                    _log.exception("circuit breaker %r: listener %r failed", self.name, listener)
