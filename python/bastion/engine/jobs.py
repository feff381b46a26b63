"""Jobs: submit now, collect later. Optionally durable in SQLite (WAL) across process restarts.

A job is one request run by a background task. With a store, every state change is written
before it is visible to ``poll``; on start, jobs a previous process left queued or running are
marked failed with a reason (their KV state died with that process), never silently dropped.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bastion.engine.async_llm import AsyncLLM
    from bastion.engine.input_processor import PromptType
    from bastion.engine.request import Deadlines
    from bastion.sampling import SamplingParams

log = logging.getLogger(__name__)
JobStatus = Literal["queued", "running", "finished", "failed", "aborted"]
_STATUS_OF_REASON = {"stop": "finished", "length": "finished", "abort": "aborted", "timeout": "failed",
                     "error": "failed"}


@dataclass
class JobState:
    """What ``poll``/``result`` return: status, output so far, and why it ended."""

    job_id: str
    status: JobStatus
    text: str = ""
    token_ids: list[int] | None = None
    finish_reason: str | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def done(self) -> bool:
        """True once the job can change no more."""
        return self.status in ("finished", "failed", "aborted")


class JobStore:
    """Durable job states in one SQLite file (WAL, synchronous=FULL: a committed result survives a crash)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at REAL)"
        )

    def save(self, job: JobState) -> None:
        """Insert or replace the job's current state."""
        self._db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)",
                         (job.job_id, json.dumps(asdict(job)), job.updated_at))

    def load_all(self) -> list[JobState]:
        """Every stored job."""
        return [JobState(**json.loads(row[0])) for row in self._db.execute("SELECT state FROM jobs")]

    def close(self) -> None:
        """Close the database."""
        self._db.close()


class JobManager:
    """Runs jobs as asyncio tasks over ``AsyncLLM.start``/``next_output`` and keeps their states."""

    def __init__(self, engine: AsyncLLM, store_path: str | None) -> None:
        self._engine = engine
        self._jobs: dict[str, JobState] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task] = set()
        self._seq = itertools.count()
        self._store = JobStore(store_path) if store_path else None
        if self._store is not None:
            self._recover(self._store)

    def _recover(self, store: JobStore) -> None:
        for job in store.load_all():
            if not job.done:
                job.status, job.error = "failed", "process restarted before the job finished"
                job.updated_at = time.time()
                store.save(job)
            self._jobs[job.job_id] = job

    def _update(self, job: JobState, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(job, key, value)
        job.updated_at = time.time()
        if self._store is not None:
            self._store.save(job)

    async def submit(self, prompt: PromptType, params: SamplingParams | None, *, priority: int,
                     deadlines: Deadlines | None, on_complete: Callable[[JobState], Any] | None) -> str:
        """Check and start the job's request, record the job as queued, return its id."""
        job_id = f"job-{uuid.uuid4().hex[:12]}-{next(self._seq)}"
        now = time.time()
        job = JobState(job_id, "queued", token_ids=[], created_at=now, updated_at=now)
        # cumulative outputs: a job's state is its whole output so far. Bad input and Overloaded
        # raise here, before the job exists.
        request = self._engine.processor.process_inputs(job_id, prompt, params, priority=priority,
                                                        deadlines=deadlines, output_kind="cumulative")
        self._engine.start(request)
        self._jobs[job_id] = job
        self._done[job_id] = asyncio.Event()
        self._update(job)
        task = asyncio.create_task(self._run(job, on_complete))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job_id

    async def _run(self, job: JobState, on_complete: Callable[[JobState], Any] | None) -> None:
        try:
            while True:
                out = await self._engine.next_output(job.job_id)
                if not out.finished:
                    self._update(job, status="running", text=out.text, token_ids=list(out.token_ids))
                    continue
                error = out.metrics.error or (f"deadline: {out.metrics.timeout_reason}"
                                              if out.finish_reason == "timeout" else None)
                self._update(job, status=_STATUS_OF_REASON.get(out.finish_reason or "error", "failed"),
                             text=out.text, token_ids=list(out.token_ids), finish_reason=out.finish_reason,
                             error=error)
                break
        except asyncio.CancelledError:
            self._engine.release(job.job_id)
            self._update(job, status="aborted", error="job task cancelled")
            raise
        except Exception as exc:
            self._update(job, status="failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._done[job.job_id].set()
        if on_complete is not None:
            try:
                result = on_complete(job)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("job %s: completion callback raised", job.job_id)

    def poll(self, job_id: str) -> JobState:
        """Current state; KeyError naming the id if unknown."""
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"job_id: unknown job {job_id!r}") from None

    async def result(self, job_id: str, timeout: float | None) -> JobState:
        """Wait for the job to end."""
        job = self.poll(job_id)
        if not job.done:
            await asyncio.wait_for(self._done[job_id].wait(), timeout)
        return job

    def close(self) -> None:
        """Close the store (running jobs were aborted by the engine)."""
        if self._store is not None:
            self._store.close()

