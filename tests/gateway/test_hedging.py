"""Hedged requests: a late first token starts a second attempt; the first to answer wins, the other is stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from bastion.gateway import BackendHealth, BackendUnavailable, Gateway, HedgePolicy
from bastion.sampling import SamplingParams

from .fault_backends import SCRIPT, ScriptedBackend
from .gateway_helpers import read_records

HEDGE = HedgePolicy(delay_s=0.1)
WHOLE = SamplingParams(max_tokens=64)  # room for the whole script


def _gateway(slow: ScriptedBackend, fast: ScriptedBackend, audit_log, **kwargs) -> Gateway:
    return Gateway({"slow": slow, "fast": fast}, audit=audit_log, **kwargs)


async def test_late_first_token_is_hedged_and_the_loser_is_stopped(audit_log, audit_path):
    slow, fast = ScriptedBackend("slow", hang=True), ScriptedBackend("fast")
    gw = _gateway(slow, fast, audit_log, hedge_policy=HEDGE)
    started = time.monotonic()
    result = await gw.generate("hi", WHOLE, user="u")
    elapsed = time.monotonic() - started
    assert result.text == SCRIPT and result.backend == "fast" and result.outcome == "served"
    assert 0.1 <= elapsed < 1.0  # the hedge delay plus the fast backend's latency, not the hang
    assert slow.cancelled == 1 and slow.aborted == [slow.requests[0].request_id]
    assert fast.cancelled == 0 and len(fast.requests) == 1
    rec = read_records(audit_path)[0]
    assert rec["hedges"] == 1 and rec["backend"] == "fast" and rec["outcome"] == "served"
    assert [(a["backend"], a["outcome"], a["hedge"]) for a in rec["attempts"]] == [
        ("slow", "hedge_lost", False), ("fast", "ok", True)]
    assert gw.breakers["slow"].metrics().failed_calls == 0  # losing a race is not a failure
    assert gw.telemetry.registry.get_sample_value(
        "bastion_gateway_hedges_total", {"from_backend": "slow", "to_backend": "fast"}) == 1


async def test_hedging_off_by_default_waits_for_the_slow_backend(audit_log, audit_path):
    slow, fast = ScriptedBackend("slow", first_delay_s=0.3), ScriptedBackend("fast")
    result = await _gateway(slow, fast, audit_log).generate("hi", WHOLE)
    assert result.backend == "slow" and result.text == SCRIPT and not fast.requests
    rec = read_records(audit_path)[0]
    assert rec["hedges"] == 0 and [a["outcome"] for a in rec["attempts"]] == ["ok"]


@pytest.mark.parametrize("health", [BackendHealth(0.95, 0.0, 0.0), BackendHealth(0.1, 5.0, 0.0)],
                         ids=["kv_full", "queue_long"])
async def test_no_hedge_onto_a_backend_without_budget(audit_log, audit_path, health):
    slow = ScriptedBackend("slow", first_delay_s=0.3)
    fast = ScriptedBackend("fast", health_report=health)
    result = await _gateway(slow, fast, audit_log, hedge_policy=HEDGE).generate("hi", WHOLE)
    assert result.backend == "slow" and not fast.requests and slow.cancelled == 0
    assert read_records(audit_path)[0]["hedges"] == 0


async def test_no_hedge_when_the_primary_answers_before_the_delay(audit_log, audit_path):
    primary, other = ScriptedBackend("primary"), ScriptedBackend("other")
    result = await _gateway(primary, other, audit_log, hedge_policy=HedgePolicy(delay_s=0.2)).generate("hi", WHOLE)
    assert result.backend == "slow" and result.text == SCRIPT and not other.requests
    rec = read_records(audit_path)[0]
    assert rec["hedges"] == 0 and rec["outcome"] == "served" and len(rec["attempts"]) == 1


async def test_primary_failing_mid_hedge_leaves_the_hedge_as_the_attempt(audit_log, audit_path):
    # the primary fails at 0.2 s, while the hedge (started at 0.1 s) has not answered yet (0.4 s)
    slow = ScriptedBackend("slow", first_delay_s=0.2, raise_before=BackendUnavailable("down"))
    fast = ScriptedBackend("fast", first_delay_s=0.3)
    gw = _gateway(slow, fast, audit_log, hedge_policy=HEDGE)
    deltas = [d async for d in gw.stream("hi", WHOLE)]
    assert "".join(d.text for d in deltas) == SCRIPT  # the answer exactly once
    assert [d.finished for d in deltas].count(True) == 1 and deltas[-1].backend == "fast"
    assert len(fast.requests) == 1 and len(slow.requests) == 1  # no retry, no second fallback
    rec = read_records(audit_path)[0]
    assert rec["hedges"] == 1 and rec["outcome"] == "fallback"
    assert [(a["backend"], a["outcome"], a["hedge"]) for a in rec["attempts"]] == [
        ("slow", "error", False), ("fast", "ok", True)]


async def test_hedge_failing_leaves_the_primary_to_answer(audit_log, audit_path):
    slow = ScriptedBackend("slow", first_delay_s=0.3)
    fast = ScriptedBackend("fast", raise_before=BackendUnavailable("down"))
    result = await _gateway(slow, fast, audit_log, hedge_policy=HEDGE).generate("hi", WHOLE)
    assert result.backend == "slow" and result.text == SCRIPT and slow.cancelled == 0
    rec = read_records(audit_path)[0]
    assert [(a["backend"], a["outcome"]) for a in rec["attempts"]] == [("fast", "error"), ("slow", "ok")]


async def test_client_leaving_during_the_race_stops_both(audit_log, audit_path):
    slow, fast = ScriptedBackend("slow", hang=True), ScriptedBackend("fast", hang=True)
    gw = _gateway(slow, fast, audit_log, hedge_policy=HEDGE)
    task = asyncio.create_task(gw.generate("hi", WHOLE))
    await asyncio.sleep(0.25)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.cancelled == 1 and fast.cancelled == 1
    await asyncio.sleep(0.05)  # the audit write of an aborted request is not awaited
    rec = read_records(audit_path)[0]
    assert rec["outcome"] == "aborted" and sorted(a["outcome"] for a in rec["attempts"]) == ["aborted", "aborted"]


def test_hedge_policy_rejects_bad_values():
    with pytest.raises(ValueError, match="delay_s"):
        HedgePolicy(delay_s=0)
    with pytest.raises(ValueError, match="max_hedges"):
        HedgePolicy(delay_s=1, max_hedges=-1)
    with pytest.raises(ValueError, match="max_kv_usage"):
        HedgePolicy(max_kv_usage=1.5)
    assert not HedgePolicy().enabled and HedgePolicy(delay_s=1).enabled


class LateFirstChunk:
    """Wraps a backend: the request starts on it at once, but its first chunk is held back ``hold_s``."""

    def __init__(self, inner, hold_s: float) -> None:
        self.inner, self.hold_s = inner, hold_s
        self.model_info, self.max_context = inner.model_info, inner.max_context
        self.used_blocks_while_held: int | None = None

    def health(self):
        return self.inner.health()

    async def abort(self, request_id: str) -> None:
        await self.inner.abort(request_id)

    async def stream(self, request) -> AsyncIterator:
        chunks = self.inner.stream(request)
        try:
            first = True
            async for chunk in chunks:
                if first:
                    self.used_blocks_while_held = self.inner.engine.stats()["num_used_blocks"]
                    await asyncio.sleep(self.hold_s)
                    first = False
                yield chunk
        finally:
            await chunks.aclose()  # closing the local stream aborts the engine request


@pytest.mark.timeout(300)
async def test_local_engine_losing_the_race_frees_its_kv_blocks(smollm2_path, audit_log, audit_path):
    from bastion import AsyncLLM
    from bastion.gateway import LocalBackend

    engine = AsyncLLM(str(smollm2_path), max_model_len=256, num_kv_blocks=64, num_threads=1)
    try:
        async for _ in engine.generate("Hi", SamplingParams(max_tokens=1), request_id="warm-up"):
            pass  # a warm engine answers well inside the hedge delay, so it holds KV blocks when it loses
        local = LateFirstChunk(LocalBackend(engine), hold_s=30.0)
        fast = ScriptedBackend("fast", first_delay_s=0.05)
        gw = Gateway({"local": local, "fast": fast}, audit=audit_log, hedge_policy=HedgePolicy(delay_s=0.5))
        result = await gw.generate("Hello, my name is", SamplingParams(max_tokens=200, temperature=0.0))
        assert result.backend == "fast" and result.text == SCRIPT
        assert local.used_blocks_while_held and local.used_blocks_while_held > 0
        for _ in range(100):  # the abort is applied by the engine thread within a step
            stats = engine.stats()
            if stats["num_running"] == 0 and stats["num_used_blocks"] == 0:
                break
            await asyncio.sleep(0.02)
        assert stats["num_running"] == 0 and stats["num_used_blocks"] == 0
        rec = read_records(audit_path)[0]
        assert [(a["backend"], a["outcome"]) for a in rec["attempts"]] == [("local", "hedge_lost"), ("fast", "ok")]
    finally:
        await engine.close()
