"""OpenTelemetry spans of a run: one span per run, one child span per step (optional, like the Gateway's).

A step's span is the current span while the step runs, so the Gateway's GenAI span of each model call is
its child: one trace holds the run, its steps and their model calls. Without ``opentelemetry-api`` every
call is a no-op.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any


def _otel_trace() -> Any:
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None


class Span:
    """A run's or a step's span; no-op when tracing is off."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, attributes: dict[str, Any]) -> None:
        """Set attributes, skipping None values (OTel rejects them)."""
        if self._span is not None:
            self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make this span the current one (spans started inside become its children)."""
        trace = _otel_trace()
        if self._span is None or trace is None:
            yield
            return
        with trace.use_span(self._span, end_on_exit=False):
            yield

    def end(self, error_type: str | None = None) -> None:
        """Close the span, with ``error.type`` and an error status when given."""
        if self._span is None:
            return
        if error_type is not None:
            trace = _otel_trace()
            self._span.set_attribute("error.type", error_type)
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, error_type))
        self._span.end()


class PipelineTracer:
    """Starts the spans of runs and steps on ``tracer`` (default: OTel's global ``bastion.pipeline``)."""

    def __init__(self, tracer: Any = None, *, enabled: bool = True) -> None:
        """``enabled=False`` or a missing ``opentelemetry-api`` turns every span into a no-op."""
        trace = _otel_trace() if enabled else None
        self._trace: Any = trace
        self._tracer = tracer if tracer is not None else (trace.get_tracer("bastion.pipeline") if trace else None)

    def start_run(self, pipeline: str, run_id: str) -> Span:
        """The root span of a run (a child of the caller's current span, if any)."""
        if self._tracer is None:
            return Span(None)
        return Span(self._tracer.start_span(f"pipeline.run {pipeline}", attributes={
            "bastion.pipeline.name": pipeline, "bastion.pipeline.run_id": run_id}))

    def start_step(self, run: Span, pipeline: str, run_id: str, step: str, kind: str) -> Span:
        """A step's span, a child of ``run``."""
        if self._tracer is None or run._span is None:
            return Span(None)
        context = self._trace.set_span_in_context(run._span)
        return Span(self._tracer.start_span(f"pipeline.step {step}", context=context, attributes={
            "bastion.pipeline.name": pipeline, "bastion.pipeline.run_id": run_id,
            "bastion.pipeline.step": step, "bastion.pipeline.step.kind": kind}))
