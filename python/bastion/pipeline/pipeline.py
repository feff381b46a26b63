"""``Pipeline``: named steps and the edges between them; run in-process (async or sync) or as a job.

Without edges the steps run in the order given. With edges a step runs once the steps before it have
ended (see ``runner``). Each run gets an id; every model call's audit record carries it in ``metadata``
(``pipeline_run_id``) and the run leaves one record of its own (request id = run id) in the Gateway's
``AuditLog``; its OpenTelemetry span is the parent of the step spans, themselves parents of the Gateway's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bastion.audit.record import AuditRecord, Outcome
from bastion.pipeline.budget import Budget, BudgetMeter
from bastion.pipeline.context import RunContext
from bastion.pipeline.edges import Edge
from bastion.pipeline.prefix import PrefixSharing
from bastion.pipeline.result import PipelineError, RunResult
from bastion.pipeline.runner import Execution
from bastion.pipeline.step import Step
from bastion.pipeline.tracing import PipelineTracer

if TYPE_CHECKING:
    from bastion.engine.jobs import JobOutcome, JobProgress, JobRunner
    from bastion.gateway import Gateway
    from bastion.pipeline.cache import ResultCache
    from bastion.pipeline.retrieval import DocumentIndex

log = logging.getLogger(__name__)
_OUTCOMES: dict[str, Outcome] = {"completed": "served", "failed": "failed", "budget_exceeded": "aborted"}


class Pipeline:
    """Steps and edges. ``budget``: the default ``Budget`` of its runs."""

    def __init__(self, name: str, steps: Sequence[Step], edges: Sequence[Edge] | None = None, *,
                 budget: Budget | None = None) -> None:
        """Check names, edges and that the graph has no cycle; PipelineError naming the problem."""
        self.name = name
        self.steps = list(steps)
        self._by_name = {s.name: s for s in self.steps}
        if len(self._by_name) != len(self.steps):
            raise PipelineError(f"pipeline {name!r}: two steps share a name")
        if edges is None:
            edges = [Edge(a.name, b.name) for a, b in zip(self.steps, self.steps[1:], strict=False)]
        self.edges = list(edges)
        for e in self.edges:
            for end in (e.source, e.target):
                if end not in self._by_name:
                    raise PipelineError(f"pipeline {name!r}: edge {e.source}->{e.target} names unknown step {end!r}")
        self._incoming = {s.name: [e for e in self.edges if e.target == s.name] for s in self.steps}
        self._check_acyclic()
        self.budget = budget or Budget()

    def _check_acyclic(self) -> None:
        indegree = {n: len(edges) for n, edges in self._incoming.items()}
        queue = [n for n, d in indegree.items() if d == 0]
        seen = 0
        while queue:
            node = queue.pop()
            seen += 1
            for e in self.edges:
                if e.source == node:
                    indegree[e.target] -= 1
                    if indegree[e.target] == 0:
                        queue.append(e.target)
        if seen != len(self.steps):
            raise PipelineError(f"pipeline {self.name!r}: the edges form a cycle "
                                f"(through {sorted(n for n, d in indegree.items() if d > 0)})")

    def step(self, name: str) -> Step:
        """The step called ``name`` (KeyError otherwise)."""
        return self._by_name[name]

    def incoming(self, name: str) -> list[Edge]:
        """Edges into step ``name``."""
        return self._incoming[name]

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str], *, functions: Mapping[str, Callable[..., Any]] | None = None,
                  indexes: Mapping[str, DocumentIndex] | None = None) -> Pipeline:
        """A pipeline from YAML text or a file path (see ``bastion.pipeline.yaml_form``)."""
        from bastion.pipeline.yaml_form import load_pipeline

        return load_pipeline(source, functions=functions or {}, indexes=indexes or {})

    async def run(self, inputs: Mapping[str, Any] | None = None, *, gateway: Gateway | None = None,
                  cache: ResultCache | None = None, budget: Budget | None = None, user: str | None = None,
                  tenant: str | None = None, run_id: str | None = None, tracer: PipelineTracer | None = None,
                  share_prefix: bool = True) -> RunResult:
        """Run once and return every step's result. ``gateway``: serves the model steps and holds the audit
        log; ``cache``: step results by content hash; ``budget`` (default ``self.budget``): tokens and time;
        ``share_prefix=False`` starts concurrent calls at once even when they share a prompt prefix
        (``bastion.pipeline.prefix``: each then prefills it)."""
        inputs = dict(inputs or {})
        clash = sorted(set(inputs) & set(self._by_name))
        if clash:
            raise PipelineError(f"pipeline {self.name!r}: inputs {clash} have the names of steps")
        ctx = RunContext(gateway, self.name, run_id or f"run-{uuid.uuid4().hex}", BudgetMeter(budget or self.budget),
                         cache, user, tenant, PrefixSharing() if share_prefix else PrefixSharing(min_tokens=None))
        tracer = tracer or PipelineTracer()
        span = tracer.start_run(self.name, ctx.run_id)
        try:
            with span.current():
                result = await Execution(self, inputs, ctx, tracer).execute(span)
            result.audit_id = await self._audit(ctx, inputs, result)
            span.set({"bastion.pipeline.status": result.status, "bastion.pipeline.reason": result.reason,
                      "bastion.pipeline.model_calls": ctx.model_calls, "bastion.audit_id": result.audit_id,
                      "gen_ai.usage.input_tokens": result.prompt_tokens,
                      "gen_ai.usage.output_tokens": result.output_tokens})
        except BaseException as e:
            span.end(type(e).__name__)
            raise
        span.end(None if result.status == "completed" else result.status)
        return result

    def run_sync(self, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> RunResult:
        """``run`` on a new event loop, from code that has none running (same keyword arguments)."""
        return asyncio.run(self.run(inputs, **kwargs))

    def job_runner(self, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> JobRunner:
        """A runner for ``JobManager.submit``: the job runs this pipeline (``run``'s keyword arguments) and
        finishes with the run's result as ``result`` (failed when the run did not complete)."""
        from bastion.engine.jobs import JobOutcome

        async def runner(progress: JobProgress) -> JobOutcome:
            progress.update(text="")
            result = await self.run(inputs, **kwargs)
            final = [s for s in result.steps.values() if s.status in ("ok", "cached", "fallback")]
            text = final[-1].output if final and isinstance(final[-1].output, str) else ""
            return JobOutcome("finished" if result.status == "completed" else "failed", text=text,
                              error=result.reason, result=result.to_dict(), output_tokens=result.output_tokens)
        return runner

    async def _audit(self, ctx: RunContext, inputs: dict[str, Any], result: RunResult) -> str | None:
        """Append the run's audit record to the Gateway's log and wait until it is durable."""
        gateway = ctx.gateway
        if gateway is None or gateway.audit is None:
            return None
        policy = gateway.audit_content
        steps = [{"name": s.name, "kind": s.kind, "status": s.status, "latency_s": round(s.latency_s, 6),
                  "prompt_tokens": s.prompt_tokens, "output_tokens": s.output_tokens, "backend": s.backend,
                  "audit_ids": s.audit_ids} for s in result.steps.values()]
        record = AuditRecord(
            request_id=ctx.run_id, user=ctx.user, tenant=ctx.tenant,
            metadata={"kind": "pipeline_run", "pipeline": self.name, "pipeline_run_id": ctx.run_id,
                      "status": result.status, "model_calls": ctx.model_calls, "steps": steps},
            prompt=policy.capture(json.dumps(inputs, ensure_ascii=False, default=str)),
            output=policy.capture(json.dumps(result.outputs, ensure_ascii=False, default=str)),
            prompt_tokens=result.prompt_tokens, output_tokens=result.output_tokens,
            total_time_s=result.latency_s, outcome=_OUTCOMES[result.status], error=result.reason)
        try:
            await asyncio.wrap_future(gateway.audit.append(record))
        except Exception:
            log.exception("audit record of pipeline run %s could not be written", ctx.run_id)
            raise
        return record.record_id
