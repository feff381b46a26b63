"""Pipelines on the real default model: prefix sharing in a fork, the cached example, fallbacks,
budgets, and the trace and audit trail of a run."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
from bastion.pipeline import (
    Budget,
    DocumentIndex,
    Fallback,
    FunctionStep,
    ModelStep,
    Pipeline,
    PipelineTracer,
    ResultCache,
    SelectStep,
    StepPolicy,
    fork,
    join,
)

ROOT = Path(__file__).resolve().parents[2]
FACTS = " ".join(f"Fact {i}: the shop at number {i} sells {['bread', 'fish', 'tea', 'soap'][i % 4]}." for i in range(34))
QUESTIONS = ["What does shop 3 sell?", "What does shop 8 sell?", "Which shops sell tea?", "Name a fish shop."]
PARAMS = {"max_tokens": 8, "temperature": 0.0, "ignore_eos": True}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fork_pipeline(name: str) -> Pipeline:
    steps = [FunctionStep("facts", lambda: FACTS)]
    steps += [ModelStep(f"b{i}", f"{{facts}}\nQuestion: {q}\nAnswer:", params=PARAMS) for i, q in enumerate(QUESTIONS)]
    steps.append(FunctionStep("joined", lambda b0, b1, b2, b3: [b0, b1, b2, b3]))
    names = [f"b{i}" for i in range(4)]
    return Pipeline(name, steps, [*fork("facts", names), *join(names, "joined")])


async def _timed_run(engine, pipeline: Pipeline, gateway, tenant: str, **kwargs) -> tuple[float, int]:
    hits = engine.stats()["prefix_cache_hits"]
    started = time.perf_counter()
    result = await pipeline.run(gateway=gateway, tenant=tenant, **kwargs)  # a tenant salts its own prefix cache
    wall = time.perf_counter() - started
    assert result.status == "completed", result.reason
    return wall, engine.stats()["prefix_cache_hits"] - hits


async def test_fork_prefills_the_shared_prefix_once(engine, gateway):
    prefix_tokens = len(engine.tokenizer.encode(FACTS))
    assert 480 <= prefix_tokens <= 640
    fork_wall, fork_hits = await _timed_run(engine, _fork_pipeline("fork"), gateway, "fork")
    naive_wall, naive_hits = await _timed_run(engine, _fork_pipeline("naive"), gateway, "naive", share_prefix=False)
    sequential = Pipeline("one_by_one", _fork_pipeline("x").steps)  # no edges: the steps in order
    seq_wall, seq_hits = await _timed_run(engine, sequential, gateway, "sequential")
    print(f"\nfork of 4 branches over a {prefix_tokens}-token prefix: {fork_wall:.2f} s, prefix hits {fork_hits} "
          f"tokens; all 4 started at once: {naive_wall:.2f} s, {naive_hits} hits; one by one: {seq_wall:.2f} s, "
          f"{seq_hits} hits")
    # three branches reuse the first one's prefill (whole 16-token blocks of the shared prefix)
    assert fork_hits >= 3 * (prefix_tokens // 16 * 16 - 16)
    assert naive_hits <= fork_hits  # the engine's chunked prefill may already stagger them
    assert fork_wall < 1.25 * seq_wall  # decode batched across branches; the machine is shared, so a margin


async def test_cached_rerun_of_the_example_costs_no_model_step(engine, gateway, audit_path, tmp_path):
    spec = importlib.util.spec_from_file_location("customer_service", ROOT / "examples" / "customer_service.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    pipeline = example.build_pipeline(DocumentIndex.from_directory(example.DOCS), max_tokens=12)
    cache = ResultCache(tmp_path / "cache.sqlite")
    inputs = {"message": "My parcel never arrived."}
    first = await pipeline.run(inputs, gateway=gateway, cache=cache)
    assert first.status == "completed", first.reason
    assert isinstance(first.outputs["final"], str) and first.outputs["final"]
    gateway.audit.flush()
    before = len(_records(audit_path))
    cache.clear_memory()  # the second run reads the SQLite tier, as a new process would
    second = await pipeline.run(inputs, gateway=gateway, cache=cache)
    gateway.audit.flush()
    records = _records(audit_path)
    assert second.status == "completed"
    assert second.outputs == first.outputs
    assert all(s.status in ("cached", "skipped") for s in second.steps.values())
    assert second.prompt_tokens == second.output_tokens == 0
    assert len(records) == before + 1  # only the run's own record: no model call
    assert records[-1]["metadata"]["model_calls"] == 0
    cache.close()


async def test_failing_step_falls_back_and_the_run_completes(gateway):
    broken = gateway.backends["broken"]

    def flaky() -> str:
        raise RuntimeError("down")

    steps = [
        ModelStep("answer", "The capital of France is", params=PARAMS, backend="broken",
                  policy=StepPolicy(retries=1, backoff_s=0.01, fallback=Fallback(backend="primary"))),
        FunctionStep("lookup", flaky, policy=StepPolicy(fallback=Fallback(value="default"))),
        FunctionStep("final", lambda answer, lookup: f"{answer} / {lookup}"),
    ]
    result = await Pipeline("fallbacks", steps).run(gateway=gateway)
    assert result.status == "completed"
    answer = result.steps["answer"]
    assert answer.status == "fallback" and answer.backend == "primary" and answer.attempts == 3
    # two step attempts, each retried once more on the backend by the Gateway's own RetryPolicy
    assert "broken: error" in (answer.error or "") and broken.calls == 4
    assert result.steps["lookup"].status == "fallback" and result.outputs["lookup"] == "default"
    assert result.outputs["final"].endswith("/ default")


async def test_budgets_stop_a_run_midway_with_a_clear_status(gateway):
    steps = [ModelStep(f"s{i}", f"Step {i}: count to ten.", params={**PARAMS, "max_tokens": 16}) for i in range(3)]
    result = await Pipeline("tokens", steps, budget=Budget(max_tokens=40)).run(gateway=gateway)
    assert result.status == "budget_exceeded"
    assert result.reason is not None and result.reason.startswith("token budget exhausted")
    assert "before step 's2'" in result.reason
    assert [s.status for s in result.steps.values()] == ["ok", "ok", "not_run"]

    async def slow(s0: str) -> str:
        import asyncio

        await asyncio.sleep(30)
        return s0

    timed = Pipeline("time", [steps[0], FunctionStep("slow", slow), steps[1]])
    started = time.monotonic()
    result = await timed.run(gateway=gateway, budget=Budget(max_seconds=2.0))
    assert time.monotonic() - started < 10
    assert result.status == "budget_exceeded" and "time budget exhausted" in (result.reason or "")
    assert [s.status for s in result.steps.values()] == ["ok", "cancelled", "not_run"]


async def test_trace_spans_and_audit_records_of_a_run_link_up(engine, audit_path):
    pytest.importorskip("opentelemetry.sdk")
    import bastion
    from bastion.gateway.telemetry import Telemetry
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway = bastion.Gateway(backends={"primary": engine}, audit=bastion.AuditLog(audit_path),
                              telemetry=Telemetry(tracer=provider.get_tracer("gateway"), metrics=False))
    steps = [SelectStep("mood", "Review: I love it!\nSentiment:", [" positive", " negative"]),
             ModelStep("reply", "Write a thank-you note for a {mood} review:", params=PARAMS)]
    result = await Pipeline("traced", steps).run(gateway=gateway, user="u1",
                                                 tracer=PipelineTracer(provider.get_tracer("pipeline")))
    await gateway.aclose()
    assert result.status == "completed"
    spans = exporter.get_finished_spans()
    (run_span,) = [s for s in spans if s.name == "pipeline.run traced"]
    step_spans = {s.attributes["bastion.pipeline.step"]: s for s in spans if s.name.startswith("pipeline.step")}
    assert set(step_spans) == {"mood", "reply"}
    model_spans = [s for s in spans if "bastion.gateway.outcome" in (s.attributes or {})]
    assert len(model_spans) == len(result.steps["mood"].audit_ids) + 1
    for s in spans:
        assert s.context.trace_id == run_span.context.trace_id
    for s in step_spans.values():
        assert s.parent.span_id == run_span.context.span_id
    for s in model_spans:
        step = next(n for n, sp in step_spans.items() if sp.context.span_id == s.parent.span_id)
        assert s.attributes["bastion.audit_id"] in result.steps[step].audit_ids

    records = _records(audit_path)
    (run_record,) = [r for r in records if r["request_id"] == result.run_id]
    assert run_record["record_id"] == result.audit_id == run_span.attributes["bastion.audit_id"]
    assert run_record["metadata"]["kind"] == "pipeline_run" and run_record["outcome"] == "served"
    calls = [r for r in records if r["metadata"].get("pipeline_run_id") == result.run_id and r is not run_record]
    assert {r["record_id"] for r in calls} == {a for s in result.steps.values() for a in s.audit_ids}
    assert {r["metadata"]["pipeline_step"] for r in calls} == {"mood", "reply"}
    assert [s["audit_ids"] for s in run_record["metadata"]["steps"]] == [s.audit_ids for s in result.steps.values()]


async def test_a_run_as_a_job(gateway):
    from bastion.engine.jobs import JobManager

    manager = JobManager(None)
    pipeline = Pipeline("job", [ModelStep("answer", "The capital of France is", params=PARAMS)])
    job = await manager.submit(pipeline.job_runner(gateway=gateway))
    state = await manager.result(job.job_id, timeout=60)
    await manager.aclose()
    assert state.status == "finished"
    assert state.result is not None and state.result["status"] == "completed"
    assert state.result["steps"][0]["name"] == "answer" and state.text == state.result["steps"][0]["output"]
