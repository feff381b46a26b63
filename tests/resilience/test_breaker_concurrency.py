"""Breaker under concurrency: asyncio cancellation inside guard(), racing probes, hammering threads."""

from __future__ import annotations

import asyncio
import threading

import pytest
from bastion.resilience.breaker import BreakerConfig, BreakerState, CallNotPermitted, CircuitBreaker

from .resilience_helpers import FakeClock


def opened_breaker(clock: FakeClock, probes: int) -> CircuitBreaker:
    """A breaker that tripped and whose open wait just elapsed (the next call enters HALF_OPEN)."""
    config = BreakerConfig(sliding_window_size=2, minimum_number_of_calls=2, wait_duration_in_open_state=5.0,
                           permitted_number_of_calls_in_half_open_state=probes)
    breaker = CircuitBreaker("engine", config, clock=clock)
    for _ in range(2):
        breaker.try_acquire().on_error(0.0, RuntimeError())
    clock.advance(5.0)
    return breaker


async def test_guard_records_success_and_error(clock: FakeClock) -> None:
    breaker = CircuitBreaker("g", BreakerConfig(sliding_window_size=10, minimum_number_of_calls=10), clock=clock)
    async with breaker.guard():
        clock.advance(0.5)
    with pytest.raises(ValueError):
        async with breaker.guard():
            raise ValueError("backend said no")
    with breaker.guard() as permit:  # the same guard works in plain threads
        permit.on_error(0.0, RuntimeError())  # an explicit report wins; the exit does not double count
    metrics = breaker.metrics()
    assert (metrics.buffered_calls, metrics.failed_calls) == (3, 2)


async def test_cancelled_task_releases_its_half_open_probe(clock: FakeClock) -> None:
    breaker = opened_breaker(clock, probes=1)
    entered = asyncio.Event()

    async def probe() -> None:
        async with breaker.guard():
            entered.set()
            await asyncio.sleep(3600)  # a stuck backend call, cancelled below

    task = asyncio.create_task(probe())
    await entered.wait()
    with pytest.raises(CallNotPermitted):
        breaker.try_acquire()  # the only probe slot is taken
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is BreakerState.HALF_OPEN
    async with breaker.guard():  # the slot is free again and the cancellation counted nothing
        pass
    assert breaker.state is BreakerState.CLOSED


async def test_concurrent_tasks_in_half_open_get_exactly_k_probes(clock: FakeClock) -> None:
    breaker = opened_breaker(clock, probes=3)
    release = asyncio.Event()
    admitted = 0

    async def call() -> str:
        nonlocal admitted
        try:
            async with breaker.guard():
                admitted += 1
                await release.wait()
                return "probe"
        except CallNotPermitted:
            return "rejected"

    tasks = [asyncio.create_task(call()) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert results.count("probe") == 3 and admitted == 3
    assert breaker.state is BreakerState.CLOSED


def test_threads_hammering_keep_counts_consistent(clock: FakeClock) -> None:
    config = BreakerConfig(sliding_window_size=100_000, minimum_number_of_calls=100_000)
    breaker = CircuitBreaker("threads", config, clock=clock)
    per_thread, threads = 2000, 8
    start = threading.Barrier(threads)

    def worker(index: int) -> None:
        start.wait()
        for call in range(per_thread):
            permit = breaker.try_acquire()
            if (index + call) % 4 == 0:
                permit.on_error(0.0, RuntimeError())
            else:
                permit.on_success(0.0)
            permit.on_success(0.0)  # a duplicate report from a racing path is ignored

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    metrics = breaker.metrics()
    assert metrics.buffered_calls == per_thread * threads
    assert metrics.failed_calls == per_thread * threads // 4


def test_threads_racing_into_half_open_admit_exactly_k(clock: FakeClock) -> None:
    breaker = opened_breaker(clock, probes=5)
    admitted: list[int] = []
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        for _ in range(50):
            try:
                breaker.try_acquire()
                admitted.append(1)
            except CallNotPermitted:
                pass

    pool = [threading.Thread(target=worker) for _ in range(16)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert len(admitted) == 5
    assert breaker.metrics().not_permitted_calls == 16 * 50 - 5
