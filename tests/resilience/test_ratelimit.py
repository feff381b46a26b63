"""Token-bucket rate limiter: refill math, exact retry_after, all-or-nothing, refunds, threads, memory."""

from __future__ import annotations

import threading

import pytest
from bastion.errors import RateLimited
from bastion.resilience.ratelimit import RateLimit, RateLimiter, ReservationTooLarge

from .resilience_helpers import FakeClock


def test_requests_refill_continuously_and_retry_after_is_exact(clock: FakeClock) -> None:
    limiter = RateLimiter([RateLimit(requests_per_minute=60)], clock=clock)  # one request per second
    for _ in range(60):
        limiter.reserve("ann", None, 0)
    with pytest.raises(RateLimited) as info:
        limiter.reserve("ann", None, 0)
    assert info.value.retry_after == pytest.approx(1.0)
    clock.advance(0.25)
    with pytest.raises(RateLimited) as info:
        limiter.reserve("ann", None, 0)
    assert info.value.retry_after == pytest.approx(0.75)
    clock.advance(0.75)
    limiter.reserve("ann", None, 0)  # exactly when promised


def test_token_retry_after_names_scope_key_and_limit(clock: FakeClock) -> None:
    limiter = RateLimiter([RateLimit(tokens_per_minute=6000, scope="tenant")], clock=clock)  # 100 tokens/s
    limiter.reserve("ann", "acme", 5000)
    with pytest.raises(RateLimited) as info:
        limiter.reserve("bob", "acme", 1500)  # 1000 left: 500 short = 5 s
    assert info.value.retry_after == pytest.approx(5.0)
    assert "tenant 'acme'" in str(info.value) and "6000 tokens per minute" in str(info.value)
    limiter.reserve("bob", "globex", 1500)  # another tenant has its own bucket


def test_all_or_nothing_across_user_and_tenant(clock: FakeClock) -> None:
    limits = [RateLimit(tokens_per_minute=1000, scope="user"), RateLimit(tokens_per_minute=1500, scope="tenant")]
    limiter = RateLimiter(limits, clock=clock)
    limiter.reserve("ann", "acme", 1000)  # ann's bucket is empty, acme has 500 left
    with pytest.raises(RateLimited) as info:
        limiter.reserve("ann", "acme", 400)  # user bucket refuses ...
    assert "user 'ann'" in str(info.value)
    limiter.reserve("bob", "acme", 500)  # ... and the tenant bucket was not debited by the refusal
    with pytest.raises(RateLimited) as info:
        limiter.reserve("cid", "acme", 1)
    assert "tenant 'acme'" in str(info.value)


def test_retry_after_is_the_slowest_bucket(clock: FakeClock) -> None:
    limits = [RateLimit(requests_per_minute=6, tokens_per_minute=600)]  # 0.1 req/s, 10 tokens/s
    limiter = RateLimiter(limits, clock=clock)
    limiter.reserve("ann", None, 600)
    with pytest.raises(RateLimited) as info:
        limiter.reserve("ann", None, 300)  # tokens: 30 s; requests: 5 remain, fine
    assert info.value.retry_after == pytest.approx(30.0)
    clock.advance(30.0)
    limiter.reserve("ann", None, 300)


def test_settle_refunds_unused_tokens_exactly_once(clock: FakeClock) -> None:
    limiter = RateLimiter([RateLimit(tokens_per_minute=1000)], clock=clock)
    reservation = limiter.reserve("ann", None, 900)  # prompt + max_tokens
    reservation.settle(300)  # only 300 were used: 600 come back
    reservation.settle(0)  # a second settle is ignored
    limiter.reserve("ann", None, 700)
    with pytest.raises(RateLimited):
        limiter.reserve("ann", None, 1)


def test_settle_charges_an_overshoot(clock: FakeClock) -> None:
    limiter = RateLimiter([RateLimit(tokens_per_minute=600)], clock=clock)  # 10 tokens/s
    limiter.reserve("ann", None, 100).settle(700)  # 600 over: level 500 - 600 = -100
    with pytest.raises(RateLimited) as info:
        limiter.reserve("ann", None, 100)
    assert info.value.retry_after == pytest.approx(20.0)
    with pytest.raises(ValueError, match="actual_tokens"):
        limiter.reserve("bob", None, 1).settle(-1)


def test_refund_never_overfills(clock: FakeClock) -> None:
    limiter = RateLimiter([RateLimit(tokens_per_minute=600)], clock=clock)
    reservation = limiter.reserve("ann", None, 600)
    clock.advance(120.0)  # refilled in full meanwhile
    reservation.settle(0)
    limiter.reserve("ann", None, 600)
    with pytest.raises(RateLimited):
        limiter.reserve("ann", None, 1)


def test_oversize_request_is_refused_not_queued(clock: FakeClock) -> None:
    limiter = RateLimiter([RateLimit(tokens_per_minute=1000, scope="tenant")], clock=clock)
    with pytest.raises(ReservationTooLarge, match="1001 tokens.*tenant 'acme'.*at most 1000") as info:
        limiter.reserve("ann", "acme", 1001)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, RateLimited)
    limiter.reserve("ann", "acme", 1000)  # the refusal debited nothing


def test_missing_ids_share_an_anonymous_bucket(clock: FakeClock) -> None:
    limiter = RateLimiter([RateLimit(requests_per_minute=1)], clock=clock)
    limiter.reserve(None, None, 0)
    with pytest.raises(RateLimited, match="anonymous"):
        limiter.reserve("", None, 0)


def test_concurrent_threads_never_over_admit(clock: FakeClock) -> None:
    limiter = RateLimiter([RateLimit(requests_per_minute=100, tokens_per_minute=5000, scope="tenant")], clock=clock)
    admitted: list[int] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(100):
            try:
                limiter.reserve("u", "acme", 70)
                admitted.append(70)
            except RateLimited:
                pass

    pool = [threading.Thread(target=worker) for _ in range(8)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert len(admitted) == 5000 // 70  # tokens bind before requests: 71 reservations
    assert sum(admitted) <= 5000


def test_idle_full_buckets_are_dropped(clock: FakeClock) -> None:
    limiter = RateLimiter([RateLimit(requests_per_minute=60, scope="user")], clock=clock)
    for user in range(5000):
        clock.advance(1.0)  # one request refills in a second: earlier users' buckets are full again
        limiter.reserve(f"user-{user}", None, 0)
    assert limiter.bucket_count <= 1024  # swept automatically, not one bucket per user ever seen
    assert limiter.sweep() == 1  # only the last user's bucket is still refilling
    clock.advance(1.0)
    assert limiter.sweep() == 0


@pytest.mark.parametrize(("kwargs", "field"), [
    ({}, "requests_per_minute"), ({"requests_per_minute": 0}, "requests_per_minute"),
    ({"tokens_per_minute": -5}, "tokens_per_minute"), ({"requests_per_minute": 1, "scope": "org"}, "scope"),
])
def test_bad_limits_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RateLimit(**kwargs)


def test_bad_reserve_arguments_are_rejected(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match=r"limits\[0\]"):
        RateLimiter([{"requests_per_minute": 1}], clock=clock)  # type: ignore[list-item]
    limiter = RateLimiter([RateLimit(requests_per_minute=1)], clock=clock)
    with pytest.raises(ValueError, match="tokens"):
        limiter.reserve("ann", None, -1)
