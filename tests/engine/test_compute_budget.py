"""Engines of one process sharing a ``ComputeBudget``: their steps never overlap, turns go first come
first served, and both engines' requests finish with the answers each engine gives alone."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from bastion import SamplingParams
from bastion.engine.compute import ComputeBudget

from .engine_helpers import async_engine

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


def test_turns_are_exclusive_and_first_come_first_served() -> None:
    budget = ComputeBudget()
    order: list[int] = []
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with budget.turn():
            inside.set()
            release.wait(5)

    def waiter(i: int) -> None:
        with budget.turn():
            order.append(i)

    first = threading.Thread(target=holder)
    first.start()
    assert inside.wait(5)
    waiters = []
    for i in range(4):  # queued one after another while the holder keeps the turn
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        waiters.append(t)
        deadline = time.monotonic() + 5
        while budget.waits < i + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
    release.set()
    for t in [first, *waiters]:
        t.join(5)
    assert order == [0, 1, 2, 3]
    assert budget.stats() == {"turns": 5, "waits": 4, "max_holders": 1}


def test_bad_thread_count_is_named() -> None:
    with pytest.raises(ValueError, match="threads"):
        ComputeBudget(0)


async def test_two_engines_share_the_cores_and_answer_as_alone(smollm2_path) -> None:
    budget = ComputeBudget(threads=1)
    a = async_engine(smollm2_path, compute=budget, served_name="classifier")
    b = async_engine(smollm2_path, compute=budget, served_name="generator")
    try:
        assert a.config.num_threads == b.config.num_threads == 1
        alone = [o async for o in a.generate("Name a colour:", GREEDY)][-1].token_ids

        async def final(engine, prompt: str) -> list[int]:
            out = [o async for o in engine.generate(prompt, GREEDY)]
            return list(out[-1].token_ids)

        results = await asyncio.gather(*(final(e, "Name a colour:") for e in (a, b) for _ in range(4)))
        assert all(r == list(alone) for r in results)
        stats = budget.stats()
        assert stats["max_holders"] == 1 and stats["waits"] > 0, stats  # they did contend, one step at a time
        assert a.stats()["num_free_blocks"] == a.stats()["num_total_blocks"]
        assert b.stats()["num_free_blocks"] == b.stats()["num_total_blocks"]
    finally:
        await a.close()
        await b.close()


def test_num_threads_must_agree_with_the_budget(smollm2_path) -> None:
    with pytest.raises(ValueError, match="num_threads"):
        async_engine(smollm2_path, compute=ComputeBudget(threads=2), num_threads=1)
