"""JobManager and JobStore with plain async runners (no model): idempotency, tenants, cancel, failures,
durability across managers and across a kill -9."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import bastion
import pytest
from bastion.engine.jobs import RESTARTED, JobManager, JobOutcome, JobProgress, JobRunner
from bastion.stores.jobs import JobState, JobStore

pytestmark = pytest.mark.timeout(60)


def finishing(text: str = "done", **outcome) -> JobRunner:
    """A runner that reports one progress step and finishes."""

    async def run(progress: JobProgress) -> JobOutcome:
        progress.update(text=text[:1], token_ids=[1], output_tokens=1)
        await asyncio.sleep(0)
        return JobOutcome("finished", text=text, token_ids=[1, 2], finish_reason="stop", output_tokens=2, **outcome)

    return run


def blocking(events: list[str], gate: asyncio.Event | None = None) -> JobRunner:
    """A runner that reports progress, then waits on ``gate`` (forever without one), logging its cleanup."""

    async def run(progress: JobProgress) -> JobOutcome:
        events.append("started")
        try:
            progress.update(text="part", token_ids=[7], output_tokens=1)
            await (gate.wait() if gate is not None else asyncio.Event().wait())
            return JobOutcome("finished", text="partial and the rest", output_tokens=2)
        except asyncio.CancelledError:
            events.append("cleanup")
            raise

    return run


async def test_submit_saves_queued_first_then_progress_then_the_outcome(tmp_path) -> None:
    path = str(tmp_path / "jobs.db")
    jobs = JobManager(path, progress_interval=0)
    store = JobStore(path)  # a second connection sees only what was committed
    completed: list[JobState] = []

    async def on_complete(job: JobState) -> None:
        await asyncio.sleep(0)
        completed.append(job)

    gate = asyncio.Event()
    events: list[str] = []
    try:
        job = await jobs.submit(blocking(events, gate), request={"prompt": "p"}, on_complete=on_complete)
        saved = store.get(job.job_id)
        assert job.status == saved.status == "queued" and events == [] and job.attempts == 1
        assert job.job_id.startswith("job-") and saved.request == {"prompt": "p"} and saved.created_at > 0
        await asyncio.sleep(0.01)
        running = jobs.poll(job.job_id)
        assert running is job and (running.status, running.text, running.output_tokens) == ("running", "part", 1)
        assert store.get(job.job_id) == running  # visible only once saved
        gate.set()
        final = await jobs.result(job.job_id, timeout=5)
        assert (final.status, final.text, final.output_tokens, final.error) == ("finished", "partial and the rest",
                                                                                 2, None)
        assert store.get(job.job_id) == final and completed == [final] and final.done
        assert jobs.poll(job.job_id) == final  # from the store now
        with pytest.raises(KeyError, match="unknown job 'nope'"):
            jobs.poll("nope")
        with pytest.raises(ValueError, match="already used"):
            await jobs.submit(finishing(), job_id=job.job_id)
    finally:
        store.close()
        await jobs.aclose()


async def test_progress_saves_are_spaced_and_what_is_visible_is_saved() -> None:
    jobs = JobManager(None, progress_interval=0.2)
    gate = asyncio.Event()

    async def run(progress: JobProgress) -> JobOutcome:
        for n in range(1, 6):
            progress.update(text="x" * n, output_tokens=n)
            await asyncio.sleep(0)
        await gate.wait()
        return JobOutcome("finished", text="xxxxxx", output_tokens=6)

    try:
        job = await jobs.submit(run)
        await asyncio.sleep(0.02)
        assert (job.status, job.output_tokens) == ("running", 1)  # the first report at once, the rest held
        assert jobs._store.get(job.job_id) == job
        await asyncio.sleep(0.4)
        assert (job.text, job.output_tokens) == ("xxxxx", 5)  # the latest, once the interval is over
        assert jobs._store.get(job.job_id) == job
        gate.set()
        assert (await jobs.result(job.job_id, 5)).output_tokens == 6
        with pytest.raises(asyncio.TimeoutError):
            await jobs.result((await jobs.submit(blocking([]))).job_id, timeout=0.01)
    finally:
        await jobs.aclose()


async def test_idempotency_key_returns_the_first_job_per_tenant(tmp_path) -> None:
    path = str(tmp_path / "jobs.db")
    jobs = JobManager(path)
    calls: list[str] = []

    def counted(name: str) -> JobRunner:
        async def run(progress: JobProgress) -> JobOutcome:
            calls.append(name)
            return JobOutcome("finished", text=name)

        return run

    first = await jobs.submit(counted("a"), tenant="acme", idempotency_key="k1")
    again = await jobs.submit(counted("b"), tenant="acme", idempotency_key="k1")
    assert again is first
    other = await jobs.submit(counted("c"), tenant="globex", idempotency_key="k1")
    no_tenant = await jobs.submit(counted("d"), idempotency_key="k1")
    empty_tenant = await jobs.submit(counted("e"), tenant="", idempotency_key="k1")
    assert len({first.job_id, other.job_id, no_tenant.job_id, empty_tenant.job_id}) == 4
    done = await jobs.result(first.job_id, 5)
    assert (await jobs.submit(counted("f"), tenant="acme", idempotency_key="k1")) == done
    for j in (other, no_tenant, empty_tenant):
        await jobs.result(j.job_id, 5)
    assert sorted(calls) == ["a", "c", "d", "e"]
    await jobs.aclose()
    restarted = JobManager(path)  # the key outlives the process
    try:
        assert (await restarted.submit(counted("g"), tenant="acme", idempotency_key="k1")).job_id == first.job_id
        assert sorted(calls) == ["a", "c", "d", "e"]
    finally:
        await restarted.aclose()


async def test_other_tenants_jobs_are_unknown_and_lists_are_newest_first() -> None:
    jobs = JobManager(None)
    events: list[str] = []
    try:
        mine = await jobs.submit(blocking(events), tenant="acme")
        theirs = await jobs.submit(finishing(), tenant="globex")
        anonymous = await jobs.submit(finishing())
        await asyncio.sleep(0.01)
        for job_id, tenant in ((mine.job_id, "globex"), (mine.job_id, None), (theirs.job_id, "acme")):
            with pytest.raises(KeyError, match=job_id):
                jobs.poll(job_id, tenant=tenant)
            with pytest.raises(KeyError, match=job_id):
                await jobs.result(job_id, 1, tenant=tenant)
            with pytest.raises(KeyError, match=job_id):
                await jobs.cancel(job_id, tenant=tenant)
        assert not mine.done and events == ["started"]  # the refused cancel touched nothing
        assert jobs.poll(mine.job_id, tenant="acme") is mine
        assert (await jobs.result(anonymous.job_id, 5, tenant=None)).status == "finished"
        assert [j.job_id for j in jobs.list(tenant="acme")] == [mine.job_id]
        assert [j.job_id for j in jobs.list(tenant=None)] == [anonymous.job_id]
        assert [j.job_id for j in jobs.list()] == [anonymous.job_id, theirs.job_id, mine.job_id]
        assert [j.job_id for j in jobs.list(limit=2)] == [anonymous.job_id, theirs.job_id]
        assert jobs.list()[2] is mine  # a live job is its live state
    finally:
        await jobs.aclose()


async def test_cancel_runs_the_runners_cleanup_and_records_aborted(tmp_path) -> None:
    path = str(tmp_path / "jobs.db")
    jobs = JobManager(path, progress_interval=0)
    completed: list[str] = []
    try:
        events: list[str] = []
        job = await jobs.submit(blocking(events), tenant="acme", on_complete=lambda j: completed.append(j.status))
        waiter = asyncio.create_task(jobs.result(job.job_id, 5))
        await asyncio.sleep(0.01)
        cancelled = await jobs.cancel(job.job_id, tenant="acme")
        assert events == ["started", "cleanup"] and completed == ["aborted"]
        assert (cancelled.status, cancelled.error, cancelled.text) == ("aborted", "cancelled", "part")
        assert (await waiter) is cancelled
        assert (await jobs.cancel(job.job_id)) == cancelled  # done: returned as is

        # cancelled before its task took a step: the runner still starts, so its cleanup runs
        early: list[str] = []
        job = await jobs.submit(blocking(early))
        assert (await jobs.cancel(job.job_id)).status == "aborted" and early == ["started", "cleanup"]

        # a runner that ends without waiting is done before the cancel lands: it stays finished
        quick = await jobs.submit(finishing())
        assert (await jobs.cancel(quick.job_id)).status in ("finished", "aborted")
    finally:
        await jobs.aclose()
    store = JobStore(path)
    try:
        assert store.get(cancelled.job_id).status == "aborted"
    finally:
        store.close()


async def test_runner_errors_become_failed_with_the_message(caplog) -> None:
    jobs = JobManager(None)

    async def boom(progress: JobProgress) -> JobOutcome:
        progress.update(text="so far")
        raise ValueError("the backend said no")

    async def wrong(progress: JobProgress) -> JobOutcome:
        return "finished"  # type: ignore[return-value]

    async def not_final(progress: JobProgress) -> JobOutcome:
        return JobOutcome("running")

    def bad_callback(job: JobState) -> None:
        raise RuntimeError("callback broke")

    try:
        with caplog.at_level(logging.ERROR, logger="bastion.engine.jobs"):
            failed = await jobs.result((await jobs.submit(boom, on_complete=bad_callback)).job_id, 5)
        assert (failed.status, failed.error, failed.text) == ("failed", "ValueError: the backend said no", "so far")
        assert "on_complete raised" in caplog.text and "callback broke" in caplog.text
        failed = await jobs.result((await jobs.submit(wrong)).job_id, 5)
        assert failed.status == "failed" and failed.error.startswith("TypeError: ") and "JobOutcome" in failed.error
        failed = await jobs.result((await jobs.submit(not_final)).job_id, 5)
        assert failed.status == "failed" and "'running'" in failed.error
        with pytest.raises(TypeError):  # not JSON: refused before the job exists
            await jobs.submit(finishing(), request={"x": object()}, job_id="not-json")
        with pytest.raises(KeyError):
            jobs.poll("not-json")
    finally:
        await jobs.aclose()


async def _leave_unfinished(path: str) -> dict[str, JobState]:
    """A finished job, then two left running by aclose (a shutdown: not recorded as aborted)."""
    jobs = JobManager(path, progress_interval=0)
    done = await jobs.result((await jobs.submit(finishing(result={"id": "cmpl-1"}), tenant="acme")).job_id, 5)
    resumable = await jobs.submit(blocking([]), tenant="acme", request={"prompt": "again"})
    no_request = await jobs.submit(blocking([]), tenant="acme")
    await asyncio.sleep(0.01)
    await jobs.aclose()
    return {"done": done, "resumable": resumable, "no_request": no_request}


async def test_restart_without_resume_fails_unfinished_jobs_with_the_reason(tmp_path) -> None:
    path = str(tmp_path / "jobs.db")
    before = await _leave_unfinished(path)
    store = JobStore(path)
    assert store.get(before["resumable"].job_id).status == "running"  # aclose did not abort it
    store.close()
    jobs = JobManager(path)
    try:
        done = jobs.poll(before["done"].job_id, tenant="acme")
        assert done == before["done"] and done.result == {"id": "cmpl-1"} and done.token_ids == [1, 2]
        for name in ("resumable", "no_request"):
            lost = await jobs.result(before[name].job_id, 1)
            assert (lost.status, lost.error, lost.text) == ("failed", RESTARTED, "part")
        assert await jobs.resume_pending() == []
    finally:
        await jobs.aclose()


async def test_restart_with_resume_reruns_jobs_from_their_request(tmp_path) -> None:
    path = str(tmp_path / "jobs.db")
    before = await _leave_unfinished(path)
    asked: list[tuple[str, int]] = []

    def resume(job: JobState) -> JobRunner | None:
        asked.append((job.job_id, job.attempts))
        return finishing(text=f"re-ran {job.request['prompt']}")

    jobs = JobManager(path, resume=resume)
    try:
        assert asked == [(before["resumable"].job_id, 1)]  # no request: nothing to re-run from
        assert jobs.poll(before["no_request"].job_id).error == RESTARTED
        waiting = jobs.poll(before["resumable"].job_id)
        assert waiting.status == "running" and not waiting.done  # pending until resume_pending
        assert await jobs.resume_pending() == [before["resumable"].job_id]
        assert waiting.status == "queued" and waiting.attempts == 2 and waiting.text == ""
        final = await jobs.result(waiting.job_id, 5, tenant="acme")
        assert (final.status, final.text, final.attempts) == ("finished", "re-ran again", 2)
        assert jobs.poll(before["done"].job_id).result == {"id": "cmpl-1"}
    finally:
        await jobs.aclose()
    store = JobStore(path)
    try:
        assert store.get(before["resumable"].job_id).status == "finished"
    finally:
        store.close()


async def test_resume_that_raises_or_declines_fails_the_job_and_pending_jobs_can_be_cancelled(tmp_path) -> None:
    path = str(tmp_path / "jobs.db")
    jobs = JobManager(path)
    ids = [(await jobs.submit(blocking([]), request={"n": n})).job_id for n in range(3)]
    await asyncio.sleep(0.01)
    await jobs.aclose()

    def resume(job: JobState) -> JobRunner | None:
        if job.request["n"] == 0:
            raise LookupError("no such model")
        return None if job.request["n"] == 1 else finishing()

    jobs = JobManager(path, resume=resume)
    try:
        assert jobs.poll(ids[0]).error == f"{RESTARTED}; resuming it raised LookupError: no such model"
        assert jobs.poll(ids[1]).error == RESTARTED
        waiter = asyncio.create_task(jobs.result(ids[2], 5))
        await asyncio.sleep(0)  # the waiter waits
        cancelled = await jobs.cancel(ids[2])
        assert (cancelled.status, cancelled.error) == ("aborted", "cancelled") and (await waiter) is cancelled
        assert await jobs.resume_pending() == []
    finally:
        await jobs.aclose()


CHILD = textwrap.dedent("""
    import asyncio, sys
    from bastion.engine.jobs import JobManager, JobOutcome

    async def quick(progress):
        return JobOutcome("finished", text="quick answer", result={"answer": 42}, output_tokens=2)

    async def slow(progress):
        progress.update(text="partial", token_ids=[5, 6, 7], output_tokens=3)
        await asyncio.sleep(3600)

    async def main():
        jobs = JobManager(sys.argv[1], progress_interval=0)
        await jobs.result((await jobs.submit(quick, job_id="quick", tenant="acme")).job_id, 10)
        job = await jobs.submit(slow, job_id="slow", tenant="acme", request={"prompt": "long"})
        while job.output_tokens == 0:  # visible means saved
            await asyncio.sleep(0.005)
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


@pytest.mark.parametrize("with_resume", [False, True])
async def test_kill_9_keeps_finished_results_and_saved_progress(tmp_path, with_resume) -> None:
    path = str(tmp_path / "jobs.db")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(bastion.__file__).parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    child = subprocess.Popen([sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line == "ready\n", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    reruns: list[dict] = []

    def resume(job: JobState) -> JobRunner | None:
        reruns.append(job.request)
        return finishing(text="long answer")

    jobs = JobManager(path, resume=resume if with_resume else None)
    try:
        quick = jobs.poll("quick", tenant="acme")
        assert (quick.status, quick.text, quick.result, quick.output_tokens) == ("finished", "quick answer",
                                                                                  {"answer": 42}, 2)
        slow = jobs.poll("slow", tenant="acme")
        assert (slow.text, slow.token_ids, slow.output_tokens) == ("partial", [5, 6, 7], 3)  # progress survived
        if with_resume:
            assert slow.status == "running" and reruns == [{"prompt": "long"}]
            assert await jobs.resume_pending() == ["slow"]
            final = await jobs.result("slow", 5)
            assert (final.status, final.text, final.attempts) == ("finished", "long answer", 2)
        else:
            assert (slow.status, slow.error, slow.attempts) == ("failed", RESTARTED, 1)
    finally:
        await jobs.aclose()


async def test_aclose_stops_running_jobs_and_wakes_waiters(tmp_path) -> None:
    jobs = JobManager(str(tmp_path / "jobs.db"))
    events: list[str] = []
    job = await jobs.submit(blocking(events))
    waiter = asyncio.create_task(jobs.result(job.job_id, 5))
    await jobs.aclose()
    assert events == ["started", "cleanup"] and job.status == "running"
    with pytest.raises(RuntimeError, match="closed before the job finished"):
        await waiter
    with pytest.raises(RuntimeError, match="closed"):
        await jobs.submit(finishing())


def test_store_indexes_keys_keeps_tenants_apart_and_reads_the_first_layout(tmp_path) -> None:
    path = str(tmp_path / "jobs.db")
    old = sqlite3.connect(path)  # the layout before tenants and idempotency keys
    old.execute("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at REAL)")
    old.execute("INSERT INTO jobs VALUES (?, ?, ?)", ("job-old", json.dumps(
        {"job_id": "job-old", "status": "finished", "text": "hi", "token_ids": [1], "finish_reason": "stop",
         "error": None, "created_at": 1.0, "updated_at": 2.0}), 2.0))
    old.commit()
    old.close()
    store = JobStore(path)
    try:
        assert store.get("job-old") == JobState("job-old", "finished", text="hi", token_ids=[1], finish_reason="stop",
                                                created_at=1.0, updated_at=2.0)
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        store.save(JobState("a", "queued", tenant="acme", idempotency_key="k", created_at=3.0))
        store.save(JobState("b", "queued", tenant=None, idempotency_key="k", created_at=4.0))
        store.save(JobState("c", "queued", tenant="", idempotency_key="k", created_at=5.0))
        with pytest.raises(sqlite3.IntegrityError):
            store.save(JobState("d", "queued", tenant="acme", idempotency_key="k"))
        assert [store.find(t, "k").job_id for t in ("acme", None, "")] == ["a", "b", "c"]
        assert store.find("acme", "other") is None and store.get("d") is None
        store.save(JobState("a", "finished", tenant="acme", idempotency_key="k", created_at=3.0, text="done"))
        assert store.find("acme", "k").text == "done"
        plan = " ".join(str(r) for r in store._db.execute(
            "EXPLAIN QUERY PLAN SELECT state FROM jobs WHERE tenant_scope = ? AND idempotency_key = ?", ('"a"', "k")))
        assert "jobs_idempotency" in plan
        assert [j.job_id for j in store.list()] == ["c", "b", "a", "job-old"]
        assert [j.job_id for j in store.list(tenant=None)] == ["b", "job-old"]
        assert [j.job_id for j in store.load_all()] == ["job-old", "a", "b", "c"]
    finally:
        store.close()
