"""Prometheus metrics with vLLM's names (so existing dashboards work) plus ``bastion:`` ones.

The engine thread only records timestamps and counts (``RequestMetrics``) and publishes a stats
snapshot; intervals are computed here, on the event loop, when outputs are delivered. Gauges read
the snapshot lazily at scrape time. Without prometheus-client every method is a cheap no-op.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from bastion.engine.outputs import RequestOutput

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# registry -> metric name -> family: engines of one process (several models) record into one registry,
# each under its own model_name label, and a family can be registered only once per registry
_FAMILIES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _family(registry: Any, kind: Any, name: str, doc: str, labels: list[str], **kwargs: Any) -> Any:
    """The ``kind`` (Gauge, Counter, Histogram) family ``name`` of ``registry``, made on first use."""
    families = _FAMILIES.setdefault(registry, {})
    if name not in families:
        families[name] = kind(name, doc, labels, registry=registry, **kwargs)
    return families[name]


class EngineMetrics:
    """The metric families of one engine, registered in ``registry`` (a fresh one by default); engines
    sharing a registry share the families, each engine's series labelled by its ``model_name``."""

    def __init__(self, model_name: str, registry: Any = None,
                 snapshot: Callable[[], dict[str, Any]] | None = None) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            self.enabled = False
            self.registry = None
            return
        self.enabled = True
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self._last_token_time: dict[str, float] = {}
        self._prev_counts: dict[str, int] = {}
        labels = ["model_name"]
        reg = self.registry

        def gauge(name: str, doc: str, key: str) -> None:
            g = _family(reg, prom.Gauge, name, doc, labels)
            g.labels(model_name).set_function(lambda: float(snapshot().get(key, 0)) if snapshot else 0.0)

        gauge("vllm:num_requests_running", "Requests in the running set.", "num_running")
        gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.", "num_waiting")
        gauge("vllm:kv_cache_usage_perc", "Fraction of KV blocks in use (0..1).", "kv_cache_usage")
        gauge("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", "prefix_cache_queries")
        gauge("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.", "prefix_cache_hits")
        gauge("vllm:num_preemptions", "Preemptions since start.", "num_preemptions")

        def hist(name: str, doc: str) -> Any:
            return _family(reg, prom.Histogram, name, doc, labels, buckets=_LATENCY_BUCKETS).labels(model_name)

        def counter(name: str, doc: str, extra: list[str] | None = None) -> Any:
            c = _family(reg, prom.Counter, name, doc, labels + (extra or []))
            return c if extra else c.labels(model_name)

        self.model_name = model_name
        self.ttft = hist("vllm:time_to_first_token_seconds", "Time to first token.")
        self.itl = hist("vllm:inter_token_latency_seconds", "Time between consecutive output tokens.")
        self.e2e = hist("vllm:e2e_request_latency_seconds", "End-to-end request latency.")
        self.queue = hist("vllm:request_queue_time_seconds", "Time waiting before first scheduled.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Tokens generated.")
        self.finished = counter("vllm:request_success", "Finished requests by reason.", ["finished_reason"])
        self.aborts = counter("bastion:request_aborts", "Requests aborted by callers or disconnects.")
        self.timeouts = counter("bastion:request_timeouts", "Requests stopped by a deadline.", ["deadline"])
        self.overloads = counter("bastion:admission_rejections", "Requests refused with Overloaded.")

    def count_overload(self) -> None:
        """One request refused at admission."""
        if self.enabled:
            self.overloads.inc()

    def observe(self, out: RequestOutput) -> None:
        """Account for one delivered output (any output kind)."""
        if not self.enabled:
            return
        rid, m = out.request_id, out.metrics
        before = self._prev_counts.get(rid, 0)
        new_tokens = out.num_total_output_tokens - before
        if new_tokens > 0:
            self.generation_tokens.inc(new_tokens)
            prev_time = self._last_token_time.get(rid)
            if prev_time is not None and m.last_token_time is not None:
                self.itl.observe((m.last_token_time - prev_time) / new_tokens)
            elif m.time_to_first_token is not None:
                self.ttft.observe(m.time_to_first_token)
                self.prompt_tokens.inc(len(out.prompt_token_ids))
            self._last_token_time[rid] = m.last_token_time or 0.0
            self._prev_counts[rid] = out.num_total_output_tokens
        if out.finished:
            self._finish(out)

    def _finish(self, out: RequestOutput) -> None:
        m = out.metrics
        self._last_token_time.pop(out.request_id, None)
        self._prev_counts.pop(out.request_id, None)
        self.finished.labels(self.model_name, out.finish_reason or "unknown").inc()
        if m.e2e_latency is not None:
            self.e2e.observe(m.e2e_latency)
        if m.queue_time is not None:
            self.queue.observe(m.queue_time)
        if out.finish_reason == "abort":
            self.aborts.inc()
        elif out.finish_reason == "timeout":
            self.timeouts.labels(self.model_name, m.timeout_reason or "unknown").inc()
