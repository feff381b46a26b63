"""Circuit breaker trips and recovers by count- and time-based windows (fake clock, no sleeps)."""

from __future__ import annotations

import pytest
from bastion.errors import BastionError
from bastion.resilience.breaker import BreakerConfig, BreakerState, CallNotPermitted, CircuitBreaker

from .resilience_helpers import FakeClock


def fail(breaker: CircuitBreaker, n: int = 1, duration: float = 0.01) -> None:
    """Report ``n`` failed calls of ``duration`` seconds."""
    for _ in range(n):
        breaker.try_acquire().on_error(duration, RuntimeError("backend down"))


def succeed(breaker: CircuitBreaker, n: int = 1, duration: float = 0.01) -> None:
    """Report ``n`` successful calls of ``duration`` seconds."""
    for _ in range(n):
        breaker.try_acquire().on_success(duration)


def count_breaker(clock: FakeClock, **overrides: object) -> CircuitBreaker:
    """A count-window breaker: 10 calls, judged from 5, 50% failures, 30 s open, 2 probes."""
    settings = dict(sliding_window_size=10, minimum_number_of_calls=5, failure_rate_threshold=50.0,
                    wait_duration_in_open_state=30.0, permitted_number_of_calls_in_half_open_state=2)
    settings.update(overrides)
    return CircuitBreaker("backend", BreakerConfig(**settings), clock=clock)


def test_no_decision_below_minimum_calls(clock: FakeClock) -> None:
    breaker = count_breaker(clock)
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.metrics().failure_rate == 100.0
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_failure_rate_at_threshold_opens_and_below_does_not(clock: FakeClock) -> None:
    below = count_breaker(clock, minimum_number_of_calls=10)
    succeed(below, 6)
    fail(below, 4)
    assert below.state is BreakerState.CLOSED
    assert below.metrics().failure_rate == 40.0
    at = count_breaker(clock, minimum_number_of_calls=10)
    succeed(at, 5)
    fail(at, 5)
    assert at.state is BreakerState.OPEN  # "exceeded" means >= the threshold


def test_count_window_forgets_old_outcomes(clock: FakeClock) -> None:
    breaker = count_breaker(clock, sliding_window_size=4, minimum_number_of_calls=4, failure_rate_threshold=75.0)
    fail(breaker, 2)
    succeed(breaker, 2)  # 50%
    succeed(breaker, 2)  # the two failures slide out
    metrics = breaker.metrics()
    assert (metrics.buffered_calls, metrics.failed_calls) == (4, 0)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED  # 2/4 = 50% < 75%


def test_minimum_calls_clamped_to_count_window(clock: FakeClock) -> None:
    breaker = count_breaker(clock, sliding_window_size=3, minimum_number_of_calls=100)
    fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN


def test_slow_calls_open_the_breaker(clock: FakeClock) -> None:
    breaker = count_breaker(clock, slow_call_duration_threshold=2.0, slow_call_rate_threshold=60.0,
                            minimum_number_of_calls=5)
    succeed(breaker, 2, duration=0.5)
    succeed(breaker, 2, duration=2.5)
    assert breaker.metrics().slow_call_rate == 50.0
    succeed(breaker, 1, duration=2.0)  # exactly the threshold is not slow
    assert breaker.state is BreakerState.CLOSED
    succeed(breaker, 2, duration=5.0)
    assert breaker.state is BreakerState.CLOSED  # 4/7 = 57% < 60%
    succeed(breaker, 1, duration=5.0)
    assert breaker.state is BreakerState.OPEN  # 5/8 = 62.5%


def test_open_rejects_with_remaining_time_then_half_open_after_wait(clock: FakeClock) -> None:
    breaker = count_breaker(clock)
    fail(breaker, 5)
    clock.advance(10.0)
    with pytest.raises(CallNotPermitted) as info:
        breaker.try_acquire()
    assert isinstance(info.value, BastionError)
    assert info.value.breaker_name == "backend"
    assert info.value.remaining_open_s == pytest.approx(20.0)
    assert breaker.metrics().not_permitted_calls == 1
    clock.advance(20.0)
    assert breaker.state is BreakerState.OPEN  # lazy: nothing happens until the next call
    breaker.try_acquire()
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_probe_limit_and_close_on_success(clock: FakeClock) -> None:
    breaker = count_breaker(clock)
    fail(breaker, 5)
    clock.advance(30.0)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    with pytest.raises(CallNotPermitted) as info:
        breaker.try_acquire()
    assert info.value.state is BreakerState.HALF_OPEN and info.value.remaining_open_s is None
    first.on_success(0.01)
    assert breaker.state is BreakerState.HALF_OPEN  # needs all permitted probes
    second.on_success(0.01)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.metrics().buffered_calls == 0  # a fresh closed window


def test_half_open_failure_reopens_with_exponential_backoff(clock: FakeClock) -> None:
    breaker = count_breaker(clock, open_backoff_multiplier=2.0, max_wait_duration_in_open_state=100.0)
    fail(breaker, 5)
    for wait in (30.0, 60.0, 100.0, 100.0):  # 30, 60, then 120 and 240 capped at 100
        clock.advance(wait - 0.5)
        with pytest.raises(CallNotPermitted) as info:
            breaker.try_acquire()
        assert info.value.remaining_open_s == pytest.approx(0.5)
        clock.advance(0.5)
        fail(breaker, 2)  # both half-open probes fail: open again, for longer
        assert breaker.state is BreakerState.OPEN


def test_closing_resets_the_backoff(clock: FakeClock) -> None:
    breaker = count_breaker(clock, open_backoff_multiplier=3.0)
    fail(breaker, 5)
    clock.advance(30.0)
    fail(breaker, 2)  # reopen: 90 s
    clock.advance(90.0)
    succeed(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 5)
    clock.advance(30.0)
    breaker.try_acquire()  # back to the base wait
    assert breaker.state is BreakerState.HALF_OPEN


def test_time_window_trips_and_ages_out_per_second(clock: FakeClock) -> None:
    config = BreakerConfig(sliding_window_type="time", sliding_window_size=10, minimum_number_of_calls=4,
                           failure_rate_threshold=55.0)
    breaker = CircuitBreaker("t", config, clock=clock)
    fail(breaker, 3)
    clock.advance(10.0)  # the three failures leave the 10 s window
    assert breaker.metrics().buffered_calls == 0
    succeed(breaker, 3)
    fail(breaker, 1)
    assert breaker.state is BreakerState.CLOSED  # 1/4 in the window, not 4/7
    clock.advance(5.0)
    fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN  # 4/7 = 57%


def test_time_window_minimum_is_not_clamped(clock: FakeClock) -> None:
    config = BreakerConfig(sliding_window_type="time", sliding_window_size=2, minimum_number_of_calls=5)
    breaker = CircuitBreaker("t", config, clock=clock)
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_time_window_memory_independent_of_calls(clock: FakeClock) -> None:
    config = BreakerConfig(sliding_window_type="time", sliding_window_size=5, minimum_number_of_calls=10**9)
    breaker = CircuitBreaker("t", config, clock=clock)
    for _ in range(4000):  # four calls a second for 1000 s
        succeed(breaker, 1)
        clock.advance(0.25)
    assert len(breaker._window._buckets) == 5
    # Read at t=2000.0: seconds 1996..1999 hold four calls each, second 2000 none yet.
    assert breaker.metrics().buffered_calls == 16
