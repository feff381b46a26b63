"""Manual states, listeners, exception predicates, permit idempotency, health samples and config checks."""

from __future__ import annotations

import pytest
from bastion.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    CallNotPermitted,
    CircuitBreaker,
    HealthPolicy,
    StateTransition,
)

from .resilience_helpers import FakeClock


def small(clock: FakeClock, **overrides: object) -> CircuitBreaker:
    """A breaker judged on 4 calls, open for 10 s, with one half-open probe."""
    settings = dict(sliding_window_size=4, minimum_number_of_calls=4, wait_duration_in_open_state=10.0,
                    permitted_number_of_calls_in_half_open_state=1)
    settings.update(overrides)
    return CircuitBreaker("svc", BreakerConfig(**settings), clock=clock)


def fail(breaker: CircuitBreaker, n: int) -> None:
    """Report ``n`` failed calls."""
    for _ in range(n):
        breaker.try_acquire().on_error(0.0, RuntimeError())


def test_forced_open_rejects_until_closed_by_hand(clock: FakeClock) -> None:
    breaker = small(clock)
    breaker.force_open()
    clock.advance(1e6)
    with pytest.raises(CallNotPermitted) as info:
        breaker.try_acquire()
    assert info.value.state is BreakerState.FORCED_OPEN and info.value.remaining_open_s is None
    breaker.transition_to_closed()
    breaker.try_acquire().on_success(0.0)
    assert breaker.state is BreakerState.CLOSED


def test_disabled_permits_and_records_nothing(clock: FakeClock) -> None:
    breaker = small(clock)
    breaker.disable()
    fail(breaker, 50)
    assert breaker.state is BreakerState.DISABLED
    assert breaker.metrics().buffered_calls == 0


def test_metrics_only_records_but_never_trips(clock: FakeClock) -> None:
    breaker = small(clock)
    breaker.metrics_only()
    fail(breaker, 10)
    metrics = breaker.metrics()
    assert metrics.state is BreakerState.METRICS_ONLY
    assert (metrics.buffered_calls, metrics.failure_rate) == (4, 100.0)


def test_reset_clears_window_backoff_and_rejections(clock: FakeClock) -> None:
    breaker = small(clock, open_backoff_multiplier=2.0)
    fail(breaker, 4)
    with pytest.raises(CallNotPermitted):
        breaker.try_acquire()
    breaker.reset()
    metrics = breaker.metrics()
    assert (metrics.state, metrics.buffered_calls, metrics.not_permitted_calls) == (BreakerState.CLOSED, 0, 0)
    fail(breaker, 4)
    clock.advance(10.0)
    breaker.try_acquire()  # the base wait again, not the doubled one
    assert breaker.state is BreakerState.HALF_OPEN


def test_listeners_see_every_transition_with_reason_and_time(clock: FakeClock) -> None:
    breaker = small(clock)
    events: list[StateTransition] = []
    breaker.add_listener(events.append)
    breaker.add_listener(lambda event: 1 / 0)  # a broken listener must not break the breaker
    fail(breaker, 4)
    clock.advance(10.0)
    breaker.try_acquire().on_success(0.0)
    breaker.force_open()
    assert [(e.from_state, e.to_state) for e in events] == [
        (BreakerState.CLOSED, BreakerState.OPEN), (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED), (BreakerState.CLOSED, BreakerState.FORCED_OPEN)]
    assert "failure rate 100.0%" in events[0].reason
    assert events[1].time == clock.now and events[0].time == clock.now - 10.0
    breaker.remove_listener(events.append)
    breaker.reset()
    assert len(events) == 4


def test_automatic_transition_is_visible_without_a_call(clock: FakeClock) -> None:
    breaker = small(clock, automatic_transition_from_open_to_half_open=True)
    fail(breaker, 4)
    clock.advance(10.0)
    assert breaker.state is BreakerState.HALF_OPEN


def test_max_wait_in_half_open_unwedges_a_lost_probe(clock: FakeClock) -> None:
    breaker = small(clock, max_wait_duration_in_half_open_state=5.0)
    fail(breaker, 4)
    clock.advance(10.0)
    breaker.try_acquire()  # the probe is lost: never reported
    clock.advance(5.0)
    assert breaker.state is BreakerState.OPEN
    closing = small(clock, max_wait_duration_in_half_open_state=5.0, transition_to_state_after_wait_duration="closed")
    fail(closing, 4)
    clock.advance(10.0)
    closing.try_acquire()
    clock.advance(5.0)
    assert closing.state is BreakerState.CLOSED


def test_ignored_exceptions_count_nothing_and_unrecorded_count_as_success(clock: FakeClock) -> None:
    config = dict(record_exception=lambda e: isinstance(e, ConnectionError),
                  ignore_exception=lambda e: isinstance(e, KeyError))
    breaker = small(clock, **config)
    for exc in (KeyError("x"), KeyError("y"), ValueError("bad request")):
        breaker.try_acquire().on_error(0.0, exc)
    metrics = breaker.metrics()
    assert (metrics.buffered_calls, metrics.failed_calls) == (1, 0)
    fail_with = ConnectionError("reset")
    for _ in range(3):
        breaker.try_acquire().on_error(0.0, fail_with)
    assert breaker.metrics().failure_rate == 75.0


def test_ignored_exception_frees_a_half_open_slot(clock: FakeClock) -> None:
    breaker = small(clock, ignore_exception=lambda e: isinstance(e, KeyError))
    fail(breaker, 4)
    clock.advance(10.0)
    breaker.try_acquire().on_error(0.0, KeyError())
    breaker.try_acquire().on_success(0.0)  # the slot came back
    assert breaker.state is BreakerState.CLOSED


def test_permit_reports_are_idempotent(clock: FakeClock) -> None:
    breaker = small(clock)
    permit = breaker.try_acquire()
    permit.on_error(0.0, RuntimeError())
    permit.on_error(0.0, RuntimeError())
    permit.on_success(0.0)
    permit.release()
    assert breaker.metrics().buffered_calls == 1


def test_stale_permit_from_closed_state_does_not_decide_half_open(clock: FakeClock) -> None:
    breaker = small(clock)
    straggler = breaker.try_acquire()
    fail(breaker, 4)
    clock.advance(10.0)
    probe = breaker.try_acquire()
    straggler.on_success(0.0)  # admitted while CLOSED: dropped
    assert breaker.state is BreakerState.HALF_OPEN
    probe.on_error(0.0, RuntimeError())
    assert breaker.state is BreakerState.OPEN


def test_unhealthy_engine_samples_open_the_breaker_as_slow_calls(clock: FakeClock) -> None:
    policy = HealthPolicy(max_kv_usage=0.9, max_queue_time_s=2.0, max_preemptions_per_s=None)
    breaker = small(clock, health_policy=policy, slow_call_rate_threshold=50.0)
    assert breaker.record_health(kv_usage=0.5, queue_time_s=0.1, preemptions_per_s=100.0) is True
    assert breaker.metrics().buffered_calls == 0  # healthy samples are not counted by default
    breaker.try_acquire().on_success(0.0)
    breaker.try_acquire().on_success(0.0)
    assert breaker.record_health(kv_usage=0.95, queue_time_s=0.1, preemptions_per_s=0.0) is False
    assert breaker.record_health(kv_usage=0.1, queue_time_s=3.0, preemptions_per_s=0.0) is False
    metrics = breaker.metrics()
    assert (metrics.state, metrics.slow_calls, metrics.failed_calls) == (BreakerState.OPEN, 2, 0)


@pytest.mark.parametrize(("field", "value"), [
    ("sliding_window_type", "sliding"), ("sliding_window_size", 0), ("minimum_number_of_calls", 0),
    ("failure_rate_threshold", 0), ("slow_call_rate_threshold", 101), ("wait_duration_in_open_state", 0),
    ("open_backoff_multiplier", 0.5), ("permitted_number_of_calls_in_half_open_state", 0),
    ("max_wait_duration_in_half_open_state", -1), ("transition_to_state_after_wait_duration", "half_open"),
    ("max_wait_duration_in_open_state", 1.0), ("record_exception", "all"), ("health_policy", {}),
])
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerConfig(**{field: value})


def test_bad_health_policy_and_name_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_kv_usage"):
        HealthPolicy(max_kv_usage=1.5)
    with pytest.raises(ValueError, match="name"):
        CircuitBreaker("")
