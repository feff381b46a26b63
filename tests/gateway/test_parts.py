"""The Gateway's small parts on their own: SSE parsing, retry policy, output gate, telemetry, inputs."""

from __future__ import annotations

import random

import pytest
from bastion.audit import verify
from bastion.errors import GuardrailViolation
from bastion.gateway import Gateway, RetryPolicy, Telemetry, Timeouts
from bastion.gateway.guarding import OutputGate, output_guard_factory
from bastion.gateway.openai_backend import iter_sse_data
from bastion.resilience.guardrails import BannedSubstringsGuard, GuardrailPipeline

from .fault_backends import ScriptedBackend


async def _lines(items):
    for item in items:
        yield item


async def test_sse_events_comments_and_multiline_data():
    lines = [": keep-alive", "event: message", "data: {\"a\":", "data: 1}", "", "data: [DONE]"]
    assert [d async for d in iter_sse_data(_lines(lines))] == ['{"a":\n1}', "[DONE]"]


def test_retry_policy_backoff_and_validation():
    policy = RetryPolicy(backoff_base_s=0.1, backoff_max_s=0.5, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
    assert policy.delay(1, retry_after=30.0) == 0.5  # Retry-After honoured, capped
    jittered = RetryPolicy(backoff_base_s=1.0, backoff_max_s=1.0, jitter=0.5)
    assert 0.5 <= jittered.delay(1, rng=random.Random(1)) <= 1.0
    with pytest.raises(ValueError, match="unknown error class"):
        RetryPolicy(retries={"gremlins": 2})
    with pytest.raises(ValueError, match="integers >= 0"):
        RetryPolicy(retries={"timeout": -1})
    with pytest.raises(ValueError, match="timeouts.stall_s"):
        Timeouts(stall_s=0)


def test_output_gate_holds_text_until_checked_and_aligns_token_ids():
    pipeline = GuardrailPipeline([BannedSubstringsGuard(["forbidden"], name="ban")])
    gate = OutputGate(output_guard_factory(pipeline), check_every_chars=4)
    released = [gate.push(word, (i,), 1) for i, word in enumerate(["ab", "cd", "ef"])]
    assert released[0] == ("", (), 0, None)  # under check_every_chars: not even checked yet
    text, ids, n, logprobs = gate.finish()
    assert logprobs is None  # the chunks had none
    total_text = "".join(r[0] for r in released) + text
    assert total_text == "abcdef"
    assert sum(len(r[1]) for r in released) + len(ids) == 3 and sum(r[2] for r in released) + n == 3

    blocking = OutputGate(output_guard_factory(pipeline), check_every_chars=1)
    blocking.push("this is ", (1,), 1)
    with pytest.raises(GuardrailViolation):
        blocking.push("forbidden", (2,), 1)
        blocking.finish()
    assert any(d.action == "block" for d in blocking.decisions)


def test_telemetry_is_a_no_op_when_disabled():
    telemetry = Telemetry(metrics=False, tracing=False)
    assert telemetry.registry is None and not telemetry.metrics_enabled
    span = telemetry.start_request(operation="chat", model="m", params=None, stream=True)
    span.set({"a": 1})
    span.end("failed")
    telemetry.record_fallback("a", "b")
    telemetry.set_breaker_state("a", "open")


@pytest.mark.parametrize("bad,error,match", [
    (123, TypeError, "prompt_or_messages"),
    ([1, 2, 3], TypeError, "token-id prompts"),
    ([{"role": "robot", "content": "x"}], ValueError, r"messages\[0\].role"),
    ([{"role": "user", "content": 5}], TypeError, r"messages\[0\].content"),
    ([], ValueError, "conversation is empty"),
])
async def test_bad_prompts_are_named_and_audited(tmp_path, bad, error, match):
    gw = Gateway([ScriptedBackend()], audit=tmp_path / "trail.db")  # a path: the Gateway owns the log
    with pytest.raises(error, match=match):
        await gw.generate(bad)
    await gw.aclose()
    assert verify(tmp_path / "trail.db").records == 1


async def test_bad_params_and_metadata_are_named(tmp_path):
    gw = Gateway([ScriptedBackend()])
    with pytest.raises(ValueError, match="temperature"):
        await gw.generate("hi", {"temperature": -1})
    with pytest.raises(ValueError, match="params: .*colour"):
        await gw.generate("hi", {"colour": "red"})
    with pytest.raises(ValueError, match="metadata must be JSON-serializable"):
        await gw.generate("hi", metadata={"when": object()})
    with pytest.raises(TypeError, match="user must be a str"):
        await gw.generate("hi", user=42)


def test_backends_that_are_not_backends_are_refused():
    with pytest.raises(TypeError, match="backend 'x' is neither a Backend nor an AsyncLLM"):
        Gateway({"x": object()})
    with pytest.raises(ValueError, match="shadow names unknown backend"):
        Gateway({"a": ScriptedBackend()}, shadow="b")


async def test_a_broken_audit_trail_is_reported_not_ignored(tmp_path):
    from bastion.audit import AuditError, AuditLog

    log = AuditLog(tmp_path / "trail.jsonl")
    log.close()
    gw = Gateway([ScriptedBackend()], audit=log)
    with pytest.raises(AuditError, match="closed"):
        await gw.generate("hi", {"max_tokens": 2})
