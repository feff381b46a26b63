"""Running a pipeline: steps start as soon as their edges allow, in parallel on one event loop.

A step is *ready* when every step with an edge into it has ended and at least one of those edges is
active (its source produced an output and its condition, if any, holds); when all have ended and none
is active, the step is *skipped*. Steps without incoming edges start at once. Each step runs under its
``StepPolicy`` (cache lookup, attempts with timeout and backoff, fallback) inside its own span. The run
stops starting steps when its budget is spent (status ``budget_exceeded``: steps in flight are cancelled,
the rest are ``not_run``) or when a step fails without a fallback (status ``failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from bastion.pipeline.cache import content_key
from bastion.pipeline.result import BudgetExceeded, RunResult, RunStatus, StepResult
from bastion.pipeline.step import Step, StepOutput

if TYPE_CHECKING:
    from bastion.pipeline.context import RunContext
    from bastion.pipeline.pipeline import Pipeline
    from bastion.pipeline.tracing import PipelineTracer, Span

_PRODUCED = ("ok", "cached", "fallback")


async def _attempts(step: Step, ctx: RunContext, values: dict[str, Any], result: StepResult) -> StepOutput:
    """The step's attempts under its policy, then its fallback; raises the last error without one."""
    policy = step.policy
    last: Exception | None = None
    for attempt in range(policy.retries + 1):
        result.attempts += 1
        try:
            return await asyncio.wait_for(step.run(ctx, values), policy.timeout_s)
        except BudgetExceeded:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of the step is retried, then falls back
            last = e
            if attempt < policy.retries:
                await asyncio.sleep(policy.delay(attempt))
    assert last is not None
    fallback = policy.fallback
    if fallback is None:
        raise last
    result.error = f"{type(last).__name__}: {last}"
    result.status = "fallback"
    if fallback.backend is not None and step.kind in ("model", "select"):
        result.attempts += 1
        return await asyncio.wait_for(step.run(ctx, values, backend=fallback.backend), policy.timeout_s)
    return StepOutput(fallback.value)


async def run_step(step: Step, ctx: RunContext, values: dict[str, Any], span: Span) -> StepResult:
    """Run one step (cache, attempts, fallback) and return its result; never raises but CancelledError."""
    result = StepResult(step.name, step.kind, "ok")
    started = time.monotonic()
    try:
        with span.current():
            key = None
            if step.policy.cache and ctx.cache is not None:
                with contextlib.suppress(TypeError, ValueError):  # inputs that are not JSON are not cached
                    key = content_key(step.definition(ctx), {n: values.get(n) for n in step.inputs})
            hit = ctx.cache.get(key) if key is not None and ctx.cache is not None else None
            if hit is not None:
                result.status, result.output = "cached", hit["output"]
                result.backend, result.details = hit.get("backend"), hit.get("details", {})
                return result
            out = await _attempts(step, ctx, values, result)
            result.output, result.backend, result.audit_ids = out.output, out.backend, out.audit_ids
            result.prompt_tokens, result.output_tokens, result.details = out.prompt_tokens, out.output_tokens, \
                out.details
            if key is not None and ctx.cache is not None and result.status == "ok":
                ctx.cache.put(key, {"output": out.output, "backend": out.backend, "details": out.details})
    except asyncio.CancelledError:
        result.status, result.error = "cancelled", "the run stopped while the step ran"
        raise
    except Exception as e:  # noqa: BLE001 - the run reports it as the step's failure
        result.status, result.error = "failed", f"{type(e).__name__}: {e}"
    finally:
        result.latency_s = time.monotonic() - started
        span.set({"bastion.pipeline.step.status": result.status, "bastion.pipeline.step.latency_s": result.latency_s,
                  "bastion.pipeline.step.attempts": result.attempts, "bastion.pipeline.step.backend": result.backend,
                  "gen_ai.usage.input_tokens": result.prompt_tokens, "gen_ai.usage.output_tokens": result.output_tokens,
                  "bastion.audit_ids": result.audit_ids or None})
        span.end(None if result.status in _PRODUCED else result.status)
    return result


class Execution:
    """The scheduling state of one run of ``pipeline``."""

    def __init__(self, pipeline: Pipeline, inputs: dict[str, Any], ctx: RunContext, tracer: PipelineTracer) -> None:
        """``inputs`` become the values templates and functions read, beside the step outputs."""
        self.pipeline, self.ctx, self.tracer = pipeline, ctx, tracer
        self.values: dict[str, Any] = dict(inputs)
        self.results = {s.name: StepResult(s.name, s.kind, "not_run") for s in pipeline.steps}
        self.ended: set[str] = set()
        self.running: dict[asyncio.Task[StepResult], str] = {}
        self.status: RunStatus = "completed"
        self.reason: str | None = None

    def _startable(self) -> list[str]:
        """Mark steps skipped while any can be; return the ready ones not yet started."""
        ready: list[str] = []
        changed = True
        while changed:
            changed = False
            for step in self.pipeline.steps:
                name = step.name
                if name in self.ended or name in self.running.values() or name in ready:
                    continue
                edges = self.pipeline.incoming(name)
                if any(e.source not in self.ended for e in edges):
                    continue
                if edges and not any(self.results[e.source].status in _PRODUCED
                                     and e.active(self.values[e.source]) for e in edges):
                    self.results[name].status = "skipped"
                    self.ended.add(name)
                    changed = True
                    continue
                ready.append(name)
        return ready

    def _stop(self, status: RunStatus, reason: str) -> None:
        if self.status == "completed":
            self.status, self.reason = status, reason

    async def execute(self, run_span: Span) -> RunResult:
        """Run every step that the edges reach, then return the run's result."""
        started = time.monotonic()
        try:
            while self.status == "completed":
                for name in self._startable():
                    exhausted = self.ctx.meter.exceeded()
                    if exhausted:
                        self._stop("budget_exceeded", f"{exhausted}; stopped before step {name!r}")
                        break
                    step = self.pipeline.step(name)
                    span = self.tracer.start_step(run_span, self.pipeline.name, self.ctx.run_id, name, step.kind)
                    self.running[asyncio.create_task(run_step(step, self.ctx, dict(self.values), span))] = name
                if not self.running or self.status != "completed":
                    break
                left = self.ctx.meter.seconds_left()
                done, _ = await asyncio.wait(self.running, timeout=None if left is None else max(left, 0.0),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    self._stop("budget_exceeded", f"{self.ctx.meter.exceeded() or 'time budget exhausted'}; "
                                                  f"cancelled {sorted(self.running.values())}")
                for task in done:
                    self._finish(self.running.pop(task), task.result())
        finally:
            await self._cancel_running()
        return RunResult(self.ctx.run_id, self.pipeline.name, self.status, self.results,
                         time.monotonic() - started, self.reason)

    def _finish(self, name: str, result: StepResult) -> None:
        self.results[name] = result
        self.ended.add(name)
        if result.status in _PRODUCED:
            self.values[name] = result.output
        elif result.status == "failed":
            self._stop("failed", f"step {name!r} failed: {result.error}")

    async def _cancel_running(self) -> None:
        for task in self.running:
            task.cancel()
        for task, name in list(self.running.items()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.results[name] = StepResult(name, self.pipeline.step(name).kind, "cancelled",
                                            error="the run stopped while the step ran")
        self.running.clear()
