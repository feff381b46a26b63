"""Hooks, A/B weighted routing, shadow traffic and OpenTelemetry spans."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from bastion.gateway import BackendUnavailable, Gateway, Hooks, RetryPolicy, Telemetry
from bastion.sampling import SamplingParams

from .fault_backends import SCRIPT, ScriptedBackend

PARAMS = SamplingParams(max_tokens=4)


async def test_hooks_see_every_event_in_order_and_cannot_break_requests(audit_log):
    seen: list[tuple[str, dict]] = []

    def record(event):
        seen.append((event.name, event.data))

    async def async_record(event):
        await asyncio.sleep(0)
        seen.append(("async:" + event.name, {}))

    def explode(event):
        raise RuntimeError("buggy hook")

    hooks = {"received": [record, explode], "routed": record, "first_token": [record, async_record],
             "finished": [explode, record]}
    gw = Gateway([ScriptedBackend("a")], audit=audit_log, hooks=hooks)
    result = await gw.generate("hi", PARAMS)
    assert result.text == " ".join(SCRIPT.split()[:4])
    names = [name for name, _ in seen]
    assert names == ["received", "routed", "first_token", "async:first_token", "finished"]
    assert seen[1][1]["backend"] == "0" and seen[-1][1]["outcome"] == "served"
    assert seen[-1][1]["audit_id"] == result.audit_id


def test_hooks_reject_unknown_events():
    with pytest.raises(ValueError, match="unknown hook event 'done'"):
        Hooks({"done": print})


async def test_ab_weights_split_first_choice(audit_log):
    gw = Gateway({"v1": ScriptedBackend("v1"), "v2": ScriptedBackend("v2")}, audit=audit_log,
                 weights={"v1": 0.8, "v2": 0.2}, rng=random.Random(7))
    counts = Counter([(await gw.generate("hi", PARAMS)).backend for _ in range(200)])
    assert 130 <= counts["v1"] <= 190 and counts["v1"] + counts["v2"] == 200


async def test_weighted_backend_still_falls_back_to_the_other(audit_log):
    gw = Gateway({"v1": ScriptedBackend("v1"), "v2": ScriptedBackend("v2", raise_before=BackendUnavailable("x"))},
                 audit=audit_log, weights={"v2": 1.0}, retry_policy=RetryPolicy(retries={}))
    assert (await gw.generate("hi", PARAMS)).backend == "v1"


@pytest.mark.parametrize("weights,match", [
    ({"nope": 1.0}, "unknown backend"), ({"a": -1.0}, "must be a number >= 0"), ({"a": 0.0}, "at least one"),
])
def test_bad_weights_are_named(weights, match):
    with pytest.raises(ValueError, match=match):
        Gateway({"a": ScriptedBackend("a")}, weights=weights)


async def test_shadow_gets_a_copy_and_never_affects_the_answer(audit_log):
    shadow = ScriptedBackend("shadow", raise_before=RuntimeError("shadow is broken"))
    gw = Gateway({"main": ScriptedBackend("main")}, audit=audit_log, shadow=shadow)
    result = await gw.generate("hi", PARAMS)
    await gw.shadow.wait()
    assert result.backend == "main" and result.text
    assert shadow.requests[0].prompt == "hi" and gw.shadow.stats["error"] == 1

    shadow.heal()
    await gw.generate("again", PARAMS)
    await gw.shadow.wait()
    assert gw.shadow.stats["ok"] == 1 and gw.shadow.stats["tokens"] == 4
    await gw.aclose()


async def test_slow_shadow_does_not_delay_the_answer(audit_log):
    shadow = ScriptedBackend("shadow", hang=True)
    gw = Gateway({"main": ScriptedBackend("main")}, audit=audit_log, shadow=shadow)
    result = await asyncio.wait_for(gw.generate("hi", PARAMS), timeout=5)
    assert result.outcome == "served"
    await gw.aclose()  # cancels the hanging shadow copy
    assert gw.shadow.stats["cancelled"] == 1


async def test_otel_span_carries_gen_ai_attributes(audit_log):
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer=provider.get_tracer("test"))
    gw = Gateway({"a": ScriptedBackend("a", raise_before=BackendUnavailable("x")), "b": ScriptedBackend("b")},
                 audit=audit_log, telemetry=telemetry, retry_policy=RetryPolicy(retries={}))
    result = await gw.generate([{"role": "user", "content": "hi"}], PARAMS, request_id="http-req-7")
    (span,) = exporter.get_finished_spans()
    attrs = span.attributes
    assert span.name == "chat b-model"
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "bastion"
    assert attrs["gen_ai.request.max_tokens"] == 4 and attrs["gen_ai.usage.output_tokens"] == 4
    assert attrs["gen_ai.response.model"] == "b-model" and attrs["bastion.gateway.outcome"] == "fallback"
    assert [e.attributes["outcome"] for e in span.events] == ["error", "ok"]
    # the caller's request id and the audit record's id tie the span to the access log and the trail
    assert attrs["bastion.request_id"] == "http-req-7" and attrs["bastion.audit_id"] == result.audit_id
