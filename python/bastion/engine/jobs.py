"""Jobs: submit now, collect later. One manager for ``AsyncLLM``'s jobs and the HTTP server's.

A job is a runner (an async function that reports progress through a ``JobProgress`` and returns a
``JobOutcome``) run as an asyncio task, with its state in a ``JobStore`` (an SQLite file, or an
in-memory database without a path). Every state change is saved before it is visible: a state
``poll`` returns is on disk. A job belongs to a tenant (another tenant's job is unknown to
``poll``/``result``/``cancel``) and may carry an idempotency key (a second submit with the same
tenant and key returns the first job and runs nothing). Jobs a previous process left unfinished
are re-run from their stored ``request`` by ``resume``, or marked failed with a reason: never
silently dropped.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import inspect
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bastion.stores.jobs import ANY_TENANT, FINAL_STATUSES, AnyTenant, JobState, JobStatus, JobStore

log = logging.getLogger(__name__)
RESTARTED = "process restarted before the job finished"


@dataclass
class JobOutcome:
    """How a runner ended: a final status and the job's whole output (it replaces the progress)."""

    status: JobStatus  # finished, failed or aborted
    text: str = ""
    token_ids: list[int] | None = None
    finish_reason: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    output_tokens: int = 0


class JobProgress:
    """What a runner reports its progress through (from the event loop's thread)."""

    def __init__(self, manager: JobManager, job: JobState) -> None:
        self._manager = manager
        self._job = job
        self._unsaved: dict[str, Any] = {}
        self._saved_at = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def update(self, *, text: str | None = None, token_ids: list[int] | None = None,
               output_tokens: int | None = None) -> None:
        """Report the output so far (the whole of it, not a delta) and make the job "running".

        The first report is saved and visible at once, later ones at most every
        ``JobManager.progress_interval`` seconds (the latest wins; the outcome replaces them all).
        """
        if text is not None:
            self._unsaved["text"] = text
        if token_ids is not None:
            self._unsaved["token_ids"] = list(token_ids)
        if output_tokens is not None:
            self._unsaved["output_tokens"] = output_tokens
        if self._job.done:
            return
        wait = self._saved_at + self._manager.progress_interval - time.monotonic()
        if self._job.status != "running" or wait <= 0:
            self._save()
        elif self._timer is None:  # the latest report is saved when the interval is over
            self._timer = asyncio.get_running_loop().call_later(wait, self._save_held)

    def _save(self) -> None:
        self._manager._change(self._job, status="running", **self._take_unsaved())
        self._saved_at = time.monotonic()

    def _save_held(self) -> None:
        self._timer = None
        if self._unsaved and not self._job.done and not self._manager.closed:
            try:
                self._save()
            except Exception:
                log.exception("job %s: saving its progress failed", self._job.job_id)

    def _take_unsaved(self) -> dict[str, Any]:
        """The reports not saved yet, as changes to the job's state (forgotten here, never saved by it)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        unsaved, self._unsaved = self._unsaved, {}
        return unsaved


JobRunner = Callable[[JobProgress], Awaitable[JobOutcome]]


def _outcome_changes(outcome: object) -> dict[str, Any]:
    if not isinstance(outcome, JobOutcome):
        raise TypeError(f"the job's runner returned {outcome!r}, not a JobOutcome")
    if outcome.status not in FINAL_STATUSES:
        raise ValueError(f"the job's runner returned status {outcome.status!r}; want finished, failed or aborted")
    return dataclasses.asdict(outcome)


class JobManager:
    """Runs jobs as asyncio tasks and keeps their states in a ``JobStore``.

    ``store``: a ``JobStore`` (closed by ``aclose``), an SQLite path, or None (in memory: nothing
    survives the process). ``resume(job)`` gives the runner that re-runs a job a previous process
    left unfinished (from ``job.request``; ``job.attempts`` counts the runs started so far), or None
    to give it up; without it such jobs are marked failed at once. ``progress_interval``: the
    shortest time between two saves of a job's progress (status changes are saved at once).
    """

    def __init__(self, store: JobStore | str | None, *,
                 resume: Callable[[JobState], JobRunner | None] | None = None,
                 progress_interval: float = 0.25) -> None:
        self._store = store if isinstance(store, JobStore) else JobStore(":memory:" if store is None else store)
        self.progress_interval = progress_interval
        self._live: dict[str, JobState] = {}  # jobs not done, and the ones a failed save left in memory
        self._ended: dict[str, asyncio.Event] = {}  # set when the job's run ends (or the manager closes)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started: set[str] = set()  # jobs whose task has taken its first step
        self._cancelled: set[str] = set()  # jobs ``cancel`` is stopping
        self._pending: dict[str, JobRunner] = {}  # unfinished jobs of a previous process, to resume
        self._closed = False
        for job in self._store.load_all():
            if not job.done:
                self._recover(job, resume)

    @property
    def closed(self) -> bool:
        """True once ``aclose`` began: nothing more is submitted, resumed or saved."""
        return self._closed

    def _recover(self, job: JobState, resume: Callable[[JobState], JobRunner | None] | None) -> None:
        runner = None
        if resume is not None and job.request is not None:
            try:
                runner = resume(job)
            except Exception as exc:
                log.exception("job %s: resume raised", job.job_id)
                self._change(job, status="failed", error=f"{RESTARTED}; resuming it raised "
                                                         f"{type(exc).__name__}: {exc}")
                return
        if runner is None:
            self._change(job, status="failed", error=RESTARTED)
            return
        self._live[job.job_id] = job
        self._ended[job.job_id] = asyncio.Event()
        self._pending[job.job_id] = runner

    def _change(self, job: JobState, **changes: Any) -> None:
        """Save the job with ``changes``, then make them visible."""
        new = dataclasses.replace(job, **changes, updated_at=time.time())
        self._store.save(new)
        vars(job).update(vars(new))

    def _start(self, job: JobState, run: JobRunner, on_complete: Callable[[JobState], Any] | None) -> None:
        self._live[job.job_id] = job
        self._ended.setdefault(job.job_id, asyncio.Event())
        self._tasks[job.job_id] = asyncio.create_task(self._run(job, run, on_complete), name=f"job {job.job_id}")

    async def resume_pending(self, on_complete: Callable[[JobState], Any] | None = None) -> builtins.list[str]:
        """(Re)start the unfinished jobs ``resume`` took on: queued again, one more attempt; their ids.
        ``on_complete`` as for ``submit`` (a server's completion webhook)."""
        if self._closed:
            raise RuntimeError("JobManager is closed")
        pending, self._pending = self._pending, {}
        for job_id, run in pending.items():
            job = self._live[job_id]
            self._change(job, status="queued", text="", token_ids=None, finish_reason=None, error=None,
                         result=None, output_tokens=0, attempts=job.attempts + 1)
            self._start(job, run, on_complete)
        return list(pending)

    async def submit(self, run: JobRunner, *, tenant: str | None = None, idempotency_key: str | None = None,
                     request: dict[str, Any] | None = None, job_id: str | None = None,
                     on_complete: Callable[[JobState], Any] | None = None) -> JobState:
        """Record a job as queued, then start ``run`` on it; returns the job's (live) state.

        A second submit with the same ``tenant`` and ``idempotency_key`` returns the first job and
        runs nothing. ``request``: JSON to re-run the job from after a restart (see ``resume``).
        ``on_complete(job)`` (may be async; what it raises is logged) runs once the job ended here:
        finished, failed or cancelled, not stopped by ``aclose``. Raises ValueError for a
        ``job_id`` already used and TypeError for a ``request`` that is not JSON.
        """
        if self._closed:
            raise RuntimeError("JobManager is closed")
        if idempotency_key is not None:
            existing = self._store.find(tenant, idempotency_key)
            if existing is not None:
                return self._live.get(existing.job_id, existing)
        if job_id is None:
            job_id = f"job-{uuid.uuid4().hex}"
        elif job_id in self._live or self._store.get(job_id) is not None:
            raise ValueError(f"job_id: {job_id!r} is already used")
        now = time.time()
        job = JobState(job_id, "queued", created_at=now, updated_at=now, tenant=tenant,
                       idempotency_key=idempotency_key, request=request, attempts=1)
        self._store.save(job)
        self._start(job, run, on_complete)
        return job

    async def _run(self, job: JobState, run: JobRunner, on_complete: Callable[[JobState], Any] | None) -> None:
        job_id = job.job_id
        self._started.add(job_id)
        progress = JobProgress(self, job)
        try:
            try:
                changes = _outcome_changes(await run(progress))
                progress._take_unsaved()  # the outcome replaces the reports
            except asyncio.CancelledError:
                if job_id not in self._cancelled:
                    raise  # aclose, or the loop shutting down: left unfinished, for a restart to resume
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                changes = {**progress._take_unsaved(), "status": "aborted", "error": "cancelled"}
            except Exception as exc:
                changes = {**progress._take_unsaved(), "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            try:
                self._change(job, **changes)
                del self._live[job_id]  # the store holds it now
            except Exception:
                log.exception("job %s: saving its final state failed; it is kept in memory", job_id)
                vars(job).update(changes, updated_at=time.time())
            self._wake(job_id)
            if on_complete is not None:
                try:
                    returned = on_complete(job)
                    if inspect.isawaitable(returned):
                        await returned
                except Exception:
                    log.exception("job %s: on_complete raised", job_id)
        finally:
            self._tasks.pop(job_id, None)
            self._started.discard(job_id)
            self._cancelled.discard(job_id)
            self._wake(job_id)

    def _wake(self, job_id: str) -> None:
        event = self._ended.pop(job_id, None)
        if event is not None:
            event.set()

    def poll(self, job_id: str, tenant: str | None | AnyTenant = ANY_TENANT) -> JobState:
        """The job's current state; KeyError naming the id if unknown, or not ``tenant``'s when given."""
        job = self._live.get(job_id)
        if job is None:
            job = self._store.get(job_id)
        if job is None or (not isinstance(tenant, AnyTenant) and job.tenant != tenant):
            raise KeyError(f"job_id: unknown job {job_id!r}")
        return job

    async def result(self, job_id: str, timeout: float | None = None,
                     tenant: str | None | AnyTenant = ANY_TENANT) -> JobState:
        """Wait until the job ends (``asyncio.TimeoutError`` after ``timeout`` seconds); KeyError as ``poll``.

        RuntimeError when the manager closes first (the job stays unfinished in the store).
        """
        job = self.poll(job_id, tenant)
        if not job.done:
            event = self._ended.get(job_id)
            if event is not None:
                await asyncio.wait_for(event.wait(), timeout)
            if not job.done:
                raise RuntimeError(f"job {job_id!r}: the JobManager closed before the job finished")
        return job

    async def cancel(self, job_id: str, tenant: str | None | AnyTenant = ANY_TENANT) -> JobState:
        """Stop the job: status aborted, error "cancelled"; a job already done is returned as is.

        The runner gets ``CancelledError`` (its cleanup frees what it holds) and must let it through;
        this returns once the runner and ``on_complete`` are done. KeyError as ``poll``.
        """
        job = self.poll(job_id, tenant)
        if job.done:
            return job
        task = self._tasks.get(job_id)
        if task is None:  # taken on by ``resume`` but not restarted yet
            self._pending.pop(job_id, None)
            self._change(job, status="aborted", error="cancelled")
            del self._live[job_id]
            self._wake(job_id)
            return job
        if job_id not in self._cancelled:
            self._cancelled.add(job_id)
            await self._first_step(job_id, task)
            if not job.done:  # a runner may end without ever waiting
                task.cancel()
        await asyncio.wait({task})
        return job

    async def _first_step(self, job_id: str, task: asyncio.Task[None]) -> None:
        # a task cancelled before its first step never runs its runner, nor the runner's cleanup:
        # let it start (it was scheduled before this wait, so one turn of the loop does it)
        while job_id not in self._started and not task.done():
            await asyncio.sleep(0)

    def mark_notified(self, job_id: str) -> None:
        """Record that the end of ``job_id`` was reported (``notified_at``), so a restart does not report it again."""
        job = self._live.get(job_id) or self._store.get(job_id)
        if job is not None and not self._closed:  # not a change of the job's state: updated_at stays
            job.notified_at = time.time()
            self._store.save(job)

    def unnotified(self, limit: int = 1000) -> builtins.list[JobState]:
        """Ended jobs with a ``webhook_url`` whose end was never reported (see ``JobStore.unnotified``)."""
        return self._store.unnotified(limit)

    def list(self, tenant: str | None | AnyTenant = ANY_TENANT, limit: int = 100) -> builtins.list[JobState]:
        """Up to ``limit`` jobs, newest first: ``tenant``'s, or everyone's by default."""
        return [self._live.get(job.job_id, job) for job in self._store.list(tenant, limit)]

    async def aclose(self) -> None:
        """Stop the running jobs without recording them as aborted (a restart may resume them), then
        close the store. Waiters on ``result`` get RuntimeError."""
        if self._closed:
            return
        self._closed = True
        tasks = dict(self._tasks)
        for job_id, task in tasks.items():
            await self._first_step(job_id, task)
            task.cancel()
        if tasks:
            await asyncio.wait(tasks.values())
        for job_id in list(self._ended):
            self._wake(job_id)
        self._pending.clear()
        self._store.close()
