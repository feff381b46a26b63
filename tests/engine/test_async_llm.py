"""AsyncLLM on the real SmolLM2: streaming, abort, cancellation, overload, deadlines, jobs, no leaks."""

from __future__ import annotations

import asyncio
import random

import bastion
import pytest
from bastion import SamplingParams
from bastion.engine.request import Deadlines

from .engine_helpers import async_engine

pytestmark = pytest.mark.timeout(600)

GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)


def _all_free(stats: dict) -> bool:
    return stats["num_free_blocks"] == stats["num_total_blocks"] and stats["num_running"] == 0


async def _wait_all_free(engine: bastion.AsyncLLM) -> dict:
    for _ in range(400):
        if _all_free(engine.stats()) and engine.stats()["num_unfinished"] == 0:
            break
        await asyncio.sleep(0.01)
    return engine.stats()


async def test_64_streams_match_llm_generate(smollm2_path) -> None:
    prompts = [f"Fact number {i} about the ocean:" for i in range(64)]
    llm = bastion.LLM(model=str(smollm2_path), num_kv_blocks=256, max_model_len=1024)
    expected = [o.token_ids for o in llm.generate(prompts, GREEDY, use_tqdm=False)]
    del llm
    engine = async_engine(smollm2_path)
    delta = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, output_kind="delta")

    async def one(i: int) -> tuple[list[int], int]:
        tokens, chunks = [], 0
        async for out in engine.generate(prompts[i], delta, request_id=f"s{i}"):
            tokens += out.token_ids
            chunks += 1
        return tokens, chunks

    try:
        results = await asyncio.gather(*(one(i) for i in range(64)))
        assert [r[0] for r in results] == expected
        assert all(chunks >= 8 for _, chunks in results)  # really streamed, not one final blob
        assert _all_free(await _wait_all_free(engine))
    finally:
        await engine.close()


async def test_abort_mid_stream_frees_blocks(smollm2_path) -> None:
    engine = async_engine(smollm2_path)
    try:
        before = engine.stats()
        params = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
        outs = []
        async for out in engine.generate("Tell me a long story about dragons.", params, request_id="a1"):
            outs.append(out)
            if len(out.token_ids) == 5:
                await engine.abort("a1")
        final = outs[-1]
        assert final.finished and final.finish_reason == "abort"
        assert 5 <= len(final.token_ids) < 200
        after = await _wait_all_free(engine)
        assert after["num_free_blocks"] == before["num_free_blocks"]
    finally:
        await engine.close()


async def test_client_cancellation_frees_blocks(smollm2_path) -> None:
    engine = async_engine(smollm2_path)
    try:
        got_tokens = asyncio.Event()

        async def consume() -> None:
            params = SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)
            async for out in engine.generate("Write an endless poem.", params, request_id="c1"):
                if out.token_ids:
                    got_tokens.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_tokens.wait(), 60)
        assert engine.stats()["num_running"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _all_free(await _wait_all_free(engine))
    finally:
        await engine.close()


async def test_overload_raises_without_disturbing_running(smollm2_path) -> None:
    engine = async_engine(smollm2_path, max_queued_requests=2, max_num_seqs=1)
    try:
        params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True)

        async def run(i: int) -> list[int]:
            toks: list[int] = []
            async for out in engine.generate(f"Item {i}:", params, request_id=f"o{i}"):
                toks = out.token_ids
            return toks

        tasks = [asyncio.create_task(run(0))]
        while engine.stats()["num_running"] == 0:
            await asyncio.sleep(0.01)
        tasks += [asyncio.create_task(run(i)) for i in (1, 2)]  # these two wait: max_num_seqs=1
        await asyncio.sleep(0.05)
        with pytest.raises(bastion.Overloaded, match="max_queued_requests"):
            engine.start("one too many", params)
        results = await asyncio.gather(*tasks)
        assert [len(r) for r in results] == [48, 48, 48]
    finally:
        await engine.close()


async def test_deadlines_fire_with_timeout_reason(smollm2_path) -> None:
    engine = async_engine(smollm2_path)
    try:
        params = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
        final = None
        async for out in engine.generate("A very long essay:", params, deadlines=Deadlines(total=0.5)):
            final = out
        assert final.finish_reason == "timeout" and final.metrics.timeout_reason == "total"
        assert len(final.token_ids) < 400
        with pytest.raises(ValueError, match="deadline.ttft"):
            Deadlines(ttft=-1)
        assert _all_free(await _wait_all_free(engine))
    finally:
        await engine.close()


async def test_jobs_submit_poll_result_and_restart(smollm2_path, tmp_path) -> None:
    store = str(tmp_path / "jobs.sqlite")
    engine = async_engine(smollm2_path, job_store=store)
    done_ids: list[str] = []
    try:
        fast = await engine.submit("Say hi:", GREEDY, on_complete=lambda job: done_ids.append(job.job_id))
        slow = await engine.submit("A long story:", SamplingParams(max_tokens=2000, temperature=0.0,
                                                                    ignore_eos=True))
        assert (await engine.poll(fast)).status in ("queued", "running", "finished")
        result = await engine.result(fast, timeout=120)
        assert result.status == "finished" and len(result.token_ids) == 16 and result.text
        assert done_ids == [fast]
        with pytest.raises(KeyError, match="unknown job"):
            await engine.poll("nope")
    finally:
        # simulate a crash: the thread stops, the slow job never finishes in this process
        engine._thread.stop()
    restarted = async_engine(smollm2_path, job_store=store)
    try:
        again = await restarted.poll(fast)
        assert again.status == "finished" and again.token_ids == result.token_ids
        lost = await restarted.poll(slow)
        assert lost.status == "failed" and "restarted" in lost.error
    finally:
        await restarted.close()


async def test_cancelling_a_job_aborts_its_request_and_frees_its_blocks(smollm2_path) -> None:
    engine = async_engine(smollm2_path)
    try:
        job_id = await engine.submit("A long story:", SamplingParams(max_tokens=2000, temperature=0.0,
                                                                      ignore_eos=True))
        while (await engine.poll(job_id)).output_tokens < 2:  # progress is saved every 0.25 s at most
            await asyncio.sleep(0.01)
        assert engine.stats()["num_running"] == 1
        job = await engine.jobs.cancel(job_id)
        assert (job.status, job.error) == ("aborted", "cancelled") and 2 <= job.output_tokens < 2000
        assert len(job.token_ids) == job.output_tokens and job.text
        assert _all_free(await _wait_all_free(engine))
    finally:
        await engine.close()


async def test_1000_submissions_random_aborts_and_deadlines_leave_no_leaks(smollm2_path) -> None:
    engine = async_engine(smollm2_path, max_num_seqs=64)
    rng = random.Random(7)
    try:
        ids = []
        for i in range(1000):
            params = SamplingParams(max_tokens=rng.randint(1, 4), temperature=0.0, ignore_eos=True)
            deadline = Deadlines(total=rng.uniform(0.01, 2.0)) if rng.random() < 0.3 else None
            ids.append(await engine.submit(f"n{i % 50}", params, deadlines=deadline))
            if rng.random() < 0.3:
                await engine.abort(ids[rng.randrange(len(ids))])
        states = [await engine.result(j, timeout=300) for j in ids]
        assert all(s.done for s in states)
        assert {s.status for s in states} <= {"finished", "aborted", "failed"}
        assert _all_free(await _wait_all_free(engine))
        assert engine.stats()["num_unfinished"] == 0
    finally:
        await engine.close()


async def test_prometheus_metrics_use_vllm_names(smollm2_path) -> None:
    prom = pytest.importorskip("prometheus_client")
    registry = prom.CollectorRegistry()
    engine = async_engine(smollm2_path, metrics_registry=registry)
    try:
        async for _ in engine.generate("Hello", GREEDY):
            pass
        text = prom.generate_latest(registry).decode()
        for name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds",
                     "vllm:e2e_request_latency_seconds", "vllm:generation_tokens_total",
                     "vllm:request_queue_time_seconds", "bastion:admission_rejections_total"):
            assert name in text
        assert 'vllm:generation_tokens_total{model_name=' in text
    finally:
        await engine.close()


async def test_priority_policy_serves_urgent_requests_first(smollm2_path) -> None:
    engine = async_engine(smollm2_path, scheduling_policy="priority", max_num_seqs=1)
    try:
        params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
        # the first request runs long enough that every later one is still queued when "urgent" arrives
        # (with 8 tokens it could finish first on a fast host and let low0 start before urgent was sent)
        long = SamplingParams(max_tokens=256, temperature=0.0, ignore_eos=True)
        order: list[str] = []

        async def run(rid: str, priority: int, sampling: SamplingParams = params) -> None:
            async for out in engine.generate(f"Request {rid}:", sampling, request_id=rid, priority=priority):
                if out.finished:
                    order.append(rid)

        first = asyncio.create_task(run("running", 5, long))
        while engine.stats()["num_running"] == 0:
            await asyncio.sleep(0.01)
        later = [asyncio.create_task(run(f"low{i}", 9)) for i in range(3)]
        while engine.stats()["num_waiting"] < 3:
            await asyncio.sleep(0.01)
        assert not order, "the long request finished before the queue was built"
        urgent = asyncio.create_task(run("urgent", 0))  # lower value = served first (vLLM's rule)
        await asyncio.gather(first, urgent, *later)
        assert order.index("urgent") < min(order.index(f"low{i}") for i in range(3))
    finally:
        await engine.close()


async def test_queue_and_ttft_deadlines_name_the_limit(smollm2_path) -> None:
    """A request stuck behind max_num_seqs misses its queue deadline; its blocks were never taken."""
    engine = async_engine(smollm2_path, max_num_seqs=1)
    try:
        long = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
        blocker = asyncio.create_task(_final(engine, "Keep talking:", long))
        while engine.stats()["num_running"] == 0:
            await asyncio.sleep(0.01)
        queued = await _final(engine, "I wait:", GREEDY, Deadlines(queue=0.05))
        assert queued.finish_reason == "timeout" and queued.metrics.timeout_reason == "queue"
        assert queued.token_ids == [] and queued.metrics.first_scheduled_time is None
        ttft = await _final(engine, "I wait too:", GREEDY, Deadlines(ttft=0.05))
        assert ttft.finish_reason == "timeout" and ttft.metrics.timeout_reason == "ttft"
        assert (await blocker).finish_reason == "length"
        assert _all_free(await _wait_all_free(engine))
    finally:
        await engine.close()


async def _final(engine: bastion.AsyncLLM, prompt: str, params: SamplingParams,
                 deadlines: Deadlines | None = None) -> bastion.RequestOutput:
    final = None
    async for out in engine.generate(prompt, params, deadlines=deadlines):
        final = out
    return final


async def test_close_ends_open_streams_and_refuses_new_work(smollm2_path) -> None:
    engine = async_engine(smollm2_path)
    started = asyncio.Event()

    async def consume() -> str | None:
        params = SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)
        reason = None
        async for out in engine.generate("Go on forever:", params):
            reason = out.finish_reason
            if out.token_ids:
                started.set()
        return reason

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 60)
    await engine.close()
    try:  # the abort may win the race with the shutdown; either way the stream ends promptly
        assert await asyncio.wait_for(task, 10) == "abort"
    except bastion.EngineDead as exc:
        assert "closed" in str(exc)
    with pytest.raises(bastion.EngineDead, match="closed"):
        engine.start("after close", GREEDY)
