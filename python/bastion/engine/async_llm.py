"""``bastion.AsyncLLM``: streaming, abort, jobs, backpressure and deadlines for asyncio services."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Any

from bastion.config import EngineConfig
from bastion.engine.compute import ComputeBudget
from bastion.engine.engine_core import EngineCore
from bastion.engine.engine_thread import AbortCommand, EngineThread
from bastion.engine.input_processor import InputProcessor, PromptType
from bastion.engine.jobs import JobManager, JobOutcome, JobProgress, JobRunner
from bastion.engine.metrics import EngineMetrics
from bastion.engine.outputs import RequestOutput
from bastion.engine.request import Deadlines, EngineCoreRequest
from bastion.errors import EngineDead, Overloaded
from bastion.sampling import SamplingParams
from bastion.stores.jobs import JobState, JobStatus

_JOB_STATUS_OF_REASON: dict[str, JobStatus] = {"stop": "finished", "length": "finished", "abort": "aborted",
                                               "timeout": "failed", "error": "failed"}


def _job_outcome(out: RequestOutput) -> JobOutcome:
    """A job's outcome from its request's finished output."""
    error = out.metrics.error or (f"deadline: {out.metrics.timeout_reason}" if out.finish_reason == "timeout"
                                  else None)
    return JobOutcome(_JOB_STATUS_OF_REASON.get(out.finish_reason or "error", "failed"), text=out.text,
                      token_ids=list(out.token_ids), finish_reason=out.finish_reason, error=error,
                      output_tokens=len(out.token_ids))


class AsyncLLM:
    """An engine on its own thread, driven from asyncio.

    Takes the same arguments as ``LLM`` (``EngineConfig`` fields) plus ``job_store`` (an SQLite
    path keeping job states and results across restarts), ``metrics_registry`` (a
    prometheus_client ``CollectorRegistry``; metrics are off when prometheus-client is absent),
    ``compute`` (a ``ComputeBudget`` shared with the other engines of this process: their steps take
    turns on the cores; its ``threads`` is this engine's ``num_threads``) and ``served_name`` (the
    ``model_name`` label of this engine's metrics; default the model's own name).
    """

    def __init__(self, model: str | None = None, *, job_store: str | None = None,
                 metrics_registry: Any = None, compute: ComputeBudget | None = None,
                 served_name: str | None = None, **kwargs: Any) -> None:
        if compute is not None and compute.threads is not None:
            if kwargs.get("num_threads") not in (None, compute.threads):
                raise ValueError(f"num_threads: {kwargs['num_threads']} differs from the shared compute budget's "
                                 f"{compute.threads} threads")
            kwargs["num_threads"] = compute.threads
        self.config = EngineConfig.build(model=model, **kwargs)
        core = EngineCore(self.config)
        self.tokenizer = core.tokenizer
        self.model_config = core.model_config
        self.max_model_len = core.max_model_len
        self.numerics = core.runner.numerics()  # for audit records: how the answers were computed
        self.weights_sha256 = core.loaded.weights_sha256  # waits for the background hash (audit model identity)
        self.processor = InputProcessor(core.tokenizer, core.model_config.vocab_size, core.max_model_len)
        self._streams: dict[str, asyncio.Queue] = {}
        # ids whose stream already holds its last item (a finished output or an error)
        self._ended: set[str] = set()
        # released ids -> how many last items of those earlier requests the engine has still to send;
        # the engine emits in command order, so these come before anything of a newer request that
        # reuses the id, and must not reach that newer request's stream
        self._orphans: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead: BaseException | None = None
        self._ids = itertools.count()
        self._adds_sent = 0
        self.metrics = EngineMetrics(served_name or self.model_config.name, registry=metrics_registry,
                                     snapshot=lambda: self._thread.snapshot)
        self._thread = EngineThread(core, self._deliver_threadsafe, self._crash_threadsafe, compute)
        self.jobs = JobManager(job_store)

    # ----- plumbing between the engine thread and the event loop --------------------------------
    def _deliver_threadsafe(self, outputs: list[RequestOutput], errors: list[tuple[str, BaseException]]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, outputs, errors)

    def _deliver(self, outputs: list[RequestOutput], errors: list[tuple[str, BaseException]]) -> None:
        for out in outputs:
            self.metrics.observe(out)
            self._route(out.request_id, out, out.finished)
        for rid, exc in errors:
            self._route(rid, exc, True)

    def _route(self, rid: str, item: RequestOutput | BaseException, last: bool) -> None:
        """Put ``item`` on the stream of ``rid`` unless it belongs to an earlier, released request."""
        pending = self._orphans.get(rid)
        if pending:
            if last:
                if pending == 1:
                    del self._orphans[rid]
                else:
                    self._orphans[rid] = pending - 1
            return
        stream = self._streams.get(rid)
        if stream is not None:
            stream.put_nowait(item)
            if last:
                self._ended.add(rid)

    def _crash_threadsafe(self, exc: BaseException) -> None:
        self._dead = exc
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fail_all, exc)

    def _fail_all(self, exc: BaseException) -> None:
        for stream in self._streams.values():
            stream.put_nowait(EngineDead(f"engine loop stopped: {type(exc).__name__}: {exc}"))

    # ----- admission ---------------------------------------------------------------------------
    def _admit(self, n_tokens: int) -> None:
        if self._dead is not None:
            raise EngineDead(f"engine loop stopped: {self._dead!r}")
        snap = self._thread.snapshot
        # adds still in the command queue are not in the snapshot yet
        queued = snap["num_unscheduled"] + self._adds_sent - snap["adds_received"]
        limit = self.config.max_queued_requests
        if limit is not None and queued >= limit:
            self.metrics.count_overload()
            raise Overloaded(f"max_queued_requests={limit} reached ({queued} requests wait); retry later")
        token_limit = self.config.max_queued_tokens
        if token_limit is not None and snap["num_unscheduled_tokens"] + n_tokens > token_limit:
            self.metrics.count_overload()
            raise Overloaded(f"max_queued_tokens={token_limit} reached; retry later")

    # ----- public API --------------------------------------------------------------------------
    def start(
        self,
        prompt: PromptType | EngineCoreRequest,
        params: SamplingParams | None = None,
        request_id: str | None = None,
        *,
        priority: int = 0,
        deadlines: Deadlines | None = None,
        cache_salt: str | None = None,
    ) -> str:
        """Check, admit and queue one request now; return its id (outputs via ``next_output``).

        ``prompt`` is a str, token ids, a chat conversation, or a request already made by
        ``self.processor.process_inputs`` (then it carries the other arguments itself). Must be
        called from the event loop's thread. Raises ValueError/TypeError for bad input and
        ``Overloaded`` when admission is full, before anything is queued.
        """
        if isinstance(prompt, EngineCoreRequest):
            if (params, request_id, priority, deadlines, cache_salt) != (None, None, 0, None, None):
                raise TypeError("start(request): the request carries its own params, id, priority, "
                                "deadlines and cache_salt; give them to processor.process_inputs")
            request = prompt
        else:
            rid = request_id if request_id is not None else f"req-{next(self._ids)}"
            request = self.processor.process_inputs(rid, prompt, params, priority=priority, deadlines=deadlines,
                                                    cache_salt=cache_salt)
        rid = request.request_id
        if rid in self._streams:
            raise ValueError(f"request_id: {rid!r} is already running")
        self._admit(len(request.prompt_token_ids))
        self._loop = asyncio.get_running_loop()
        self._streams[rid] = asyncio.Queue()
        self._adds_sent += 1
        self._thread.send(request)
        return rid

    async def next_output(self, request_id: str) -> RequestOutput:
        """The request's next output; after the finished one the request is forgotten."""
        item = await self._streams[request_id].get()
        if isinstance(item, BaseException) or item.finished:
            self._streams.pop(request_id, None)
            self._ended.discard(request_id)
        if isinstance(item, BaseException):
            raise item
        return item

    def release(self, request_id: str) -> None:
        """Forget a request whose consumer went away, aborting it if it still runs."""
        if self._streams.pop(request_id, None) is None:
            return
        if request_id in self._ended:  # its last item already arrived: nothing runs, nothing to come
            self._ended.discard(request_id)
            return
        self._orphans[request_id] = self._orphans.get(request_id, 0) + 1
        self._thread.send(AbortCommand(request_id))

    async def generate(
        self,
        prompt: PromptType | EngineCoreRequest,
        params: SamplingParams | None = None,
        request_id: str | None = None,
        *,
        priority: int = 0,
        deadlines: Deadlines | None = None,
        cache_salt: str | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Stream the outputs of one request (per ``params.output_kind``: cumulative, delta or final).

        Raises like ``start``. Cancelling the consuming task, or leaving the loop early, aborts the
        request within one step and frees its KV blocks.
        """
        rid = self.start(prompt, params, request_id, priority=priority, deadlines=deadlines,
                         cache_salt=cache_salt)
        try:
            while True:
                out = await self.next_output(rid)
                yield out
                if out.finished:
                    return
        finally:
            self.release(rid)

    async def abort(self, request_id: str) -> None:
        """Stop a request: its blocks are freed within one step and its stream ends with "abort"."""
        self._thread.send(AbortCommand(request_id))

    @property
    def is_dead(self) -> bool:
        """True once the engine loop has stopped (closed or crashed): nothing more can be served."""
        return self._dead is not None

    def stats(self) -> dict[str, Any]:
        """The latest figures published by the engine thread (see ``LLM.stats``)."""
        return dict(self._thread.snapshot)

    async def submit(self, prompt: PromptType, params: SamplingParams | None = None, *,
                     priority: int = 0, deadlines: Deadlines | None = None,
                     on_complete: Callable[[JobState], Any] | None = None) -> str:
        """Start a job and return its id at once (see ``poll`` and ``result``; the id is the request's).

        The request is checked and queued first: bad input and ``Overloaded`` raise (like ``start``)
        before any job exists. ``on_complete(job)`` (may be async) runs once the job ended.
        """
        job_id = f"job-{uuid.uuid4().hex}"  # unique across restarts: a job store outlives the process
        # cumulative outputs: a job's state is its whole output so far
        request = self.processor.process_inputs(job_id, prompt, params, priority=priority, deadlines=deadlines,
                                                output_kind="cumulative")
        self.start(request)
        try:
            job = await self.jobs.submit(self._job_runner(job_id), job_id=job_id, on_complete=on_complete)
        except BaseException:
            self.release(job_id)
            raise
        return job.job_id

    def _job_runner(self, request_id: str) -> JobRunner:
        """The runner of a job over the started request ``request_id``: its outputs as progress."""

        async def run(progress: JobProgress) -> JobOutcome:
            try:
                while True:
                    out = await self.next_output(request_id)
                    if out.finished:
                        return _job_outcome(out)
                    progress.update(text=out.text, token_ids=out.token_ids, output_tokens=len(out.token_ids))
            except asyncio.CancelledError:
                self.release(request_id)  # aborts the request: its KV blocks are freed within one step
                raise

        return run

    async def poll(self, job_id: str) -> JobState:
        """The job's status (queued, running, finished, failed, aborted) and its output so far."""
        return self.jobs.poll(job_id)

    async def result(self, job_id: str, timeout: float | None = None) -> JobState:
        """Wait until the job ends (``asyncio.TimeoutError`` after ``timeout`` seconds)."""
        return await self.jobs.result(job_id, timeout)

    async def close(self) -> None:
        """Stop the jobs (a store keeps them unfinished), abort everything, stop the engine thread."""
        await self.jobs.aclose()
        for rid in list(self._streams):
            self._thread.send(AbortCommand(rid))
        await asyncio.to_thread(self._thread.stop)
        self._dead = self._dead or EngineDead("AsyncLLM was closed")
        for stream in self._streams.values():  # nobody waits forever on a closed engine
            stream.put_nowait(EngineDead("AsyncLLM was closed before this request finished"))

    async def __aenter__(self) -> AsyncLLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
