"""Gateway telemetry: OpenTelemetry GenAI spans and Prometheus metrics, both optional.

* Spans (when ``opentelemetry-api`` is importable): one INTERNAL span per request named
  ``"{gen_ai.operation.name} {gen_ai.request.model}"`` with the GenAI semantic-convention attributes
  (request params, usage, finish reasons, time to first chunk, ``error.type``) plus ``bastion.*``
  attributes for outcome and backend; each backend attempt is a span event. The deprecated
  ``gen_ai.system`` is emitted next to ``gen_ai.provider.name`` unless
  ``OTEL_SEMCONV_STABILITY_OPT_IN`` contains ``gen_ai_latest_experimental``.
* Metrics (when ``prometheus-client`` is importable), in ``registry`` (a private one by default so
  two Gateways never collide; pass ``prometheus_client.REGISTRY`` to expose them globally).

Without either package every call is a cheap no-op.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.gateway.trace import RequestTrace
    from bastion.resilience.breaker import BreakerState
    from bastion.sampling.params import SamplingParams

_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
PROVIDER = "bastion"


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class RequestSpan:
    """The span of one request; every method is a no-op when tracing is off."""

    def __init__(self, span: Any, operation: str = "") -> None:
        self._span = span
        self._operation = operation

    def set(self, attributes: dict[str, Any]) -> None:
        """Set attributes, skipping None values (OTel rejects them)."""
        if self._span is not None:
            self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def rename(self, model: str) -> None:
        """Name the span ``"{operation} {model}"`` once the serving model is known."""
        if self._span is not None:
            self._span.update_name(f"{self._operation} {model}")
            self._span.set_attribute("gen_ai.request.model", model)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        """Add a span event (one per backend attempt)."""
        if self._span is not None:
            self._span.add_event(name, {k: v for k, v in attributes.items() if v is not None})

    def end(self, error_type: str | None = None) -> None:
        """Close the span, marking it as an error with ``error.type`` when given."""
        if self._span is None:
            return
        if error_type is not None:
            trace = importlib.import_module("opentelemetry.trace")
            self._span.set_attribute("error.type", error_type)
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, error_type))
        self._span.end()


class Telemetry:
    """Spans and metrics for one Gateway."""

    def __init__(self, *, registry: Any = None, tracer: Any = None, metrics: bool = True, tracing: bool = True) -> None:
        trace = _optional("opentelemetry.trace") if tracing else None
        self._tracer = tracer if tracer is not None else (trace.get_tracer("bastion.gateway") if trace else None)
        self._kind = trace.SpanKind.INTERNAL if trace else None
        opt_in = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
        self._legacy_system = "gen_ai_latest_experimental" not in opt_in
        prom = _optional("prometheus_client") if metrics else None
        self.registry = None
        if prom is not None:
            self.registry = registry if registry is not None else prom.CollectorRegistry()
            self._init_metrics(prom)

    def _init_metrics(self, prom: Any) -> None:
        reg = self.registry
        self.requests = prom.Counter("bastion_gateway_requests", "Requests by outcome", ["outcome"], registry=reg)
        self.fallbacks = prom.Counter("bastion_gateway_fallbacks", "Failovers from one backend to the next",
                                      ["from_backend", "to_backend"], registry=reg)
        self.hedges = prom.Counter("bastion_gateway_hedges", "Hedge attempts started beside a slow attempt",
                                   ["from_backend", "to_backend"], registry=reg)
        self.guard_blocks = prom.Counter("bastion_gateway_guardrail_blocks", "Guardrail blocks by stage",
                                         ["stage"], registry=reg)
        self.rate_limited = prom.Counter("bastion_gateway_rate_limited", "Requests refused by the rate limiter",
                                         registry=reg)
        self.breaker_state = prom.Gauge("bastion_gateway_breaker_state",
                                        "Circuit breaker state (0 closed, 1 half-open, 2 open, 3 other)",
                                        ["backend"], registry=reg)
        self.duration = prom.Histogram("bastion_gateway_request_duration_seconds", "End-to-end request time",
                                       ["outcome"], buckets=_DURATION_BUCKETS, registry=reg)
        self.ttft = prom.Histogram("bastion_gateway_time_to_first_token_seconds", "Time to first released token",
                                   buckets=_TTFT_BUCKETS, registry=reg)
        self.tokens = prom.Counter("bastion_gateway_tokens", "Tokens by type (input/output)", ["type"], registry=reg)

    @property
    def metrics_enabled(self) -> bool:
        """True when Prometheus metrics are being recorded."""
        return self.registry is not None

    def start_request(self, *, operation: str, model: str | None, params: SamplingParams,
                      stream: bool) -> RequestSpan:
        """Open the GenAI span of a request."""
        if self._tracer is None:
            return RequestSpan(None)
        attrs = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": model,
            "gen_ai.request.stream": stream,
            "gen_ai.request.max_tokens": params.max_tokens,
            "gen_ai.request.temperature": params.temperature,
            "gen_ai.request.top_p": params.top_p,
            "gen_ai.request.seed": params.seed,
        }
        if self._legacy_system:
            attrs["gen_ai.system"] = PROVIDER
        span = self._tracer.start_span(f"{operation} {model or 'unknown'}", kind=self._kind,
                                       attributes={k: v for k, v in attrs.items() if v is not None})
        return RequestSpan(span, operation)

    def finish_request(self, span: RequestSpan | None, trace: RequestTrace) -> None:
        """Count a finished request (outcome, timings, tokens) and close its span."""
        outcome = trace.outcome or "failed"
        if self.registry is not None:
            self.requests.labels(outcome).inc()
            self.duration.labels(outcome).observe(trace.elapsed())
            if trace.ttft_s is not None:
                self.ttft.observe(trace.ttft_s)
            self.tokens.labels("input").inc(trace.prompt_tokens)
            self.tokens.labels("output").inc(trace.output_tokens)
        if span is None:
            return
        if trace.model is not None:  # the model is known only once a backend has answered
            span.rename(trace.model.name)
        span.set({"gen_ai.response.model": trace.model.name if trace.model else None,
                  "gen_ai.response.finish_reasons": [trace.finish_reason] if trace.finish_reason else None,
                  "gen_ai.usage.input_tokens": trace.prompt_tokens,
                  "gen_ai.usage.output_tokens": trace.output_tokens,
                  "gen_ai.response.time_to_first_chunk": trace.ttft_s,
                  "bastion.gateway.outcome": outcome, "bastion.gateway.backend": trace.backend,
                  # the caller's request id (a server's X-Request-Id) and the audit record's id join a trace
                  # to its access-log line and its audit record
                  "bastion.request_id": trace.request_id, "bastion.audit_id": trace.audit_id})
        for a in trace.attempts:
            span.event("bastion.gateway.attempt", {"bastion.gateway.backend": a.backend, "outcome": a.outcome,
                                                    "error.type": a.error_class, "duration_s": a.duration_s})
        span.end(None if outcome in ("served", "fallback", "blocked") else outcome)

    def record_fallback(self, from_backend: str, to_backend: str) -> None:
        """Count a failover."""
        if self.registry is not None:
            self.fallbacks.labels(from_backend, to_backend).inc()

    def record_hedge(self, from_backend: str, to_backend: str) -> None:
        """Count a hedge started on ``to_backend`` beside a slow attempt on ``from_backend``."""
        if self.registry is not None:
            self.hedges.labels(from_backend, to_backend).inc()

    def record_guard_block(self, stage: str) -> None:
        """Count a guardrail block at ``stage`` (input / output)."""
        if self.registry is not None:
            self.guard_blocks.labels(stage).inc()

    def record_rate_limited(self) -> None:
        """Count a rate-limit rejection."""
        if self.registry is not None:
            self.rate_limited.inc()

    def set_breaker_state(self, backend: str, state: BreakerState) -> None:
        """Publish a backend's breaker state."""
        if self.registry is not None:
            self.breaker_state.labels(backend).set(BREAKER_STATE_VALUES.get(state.value, 3))
