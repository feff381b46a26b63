"""Fallback, retries, timeouts and mid-stream failover with fault-injecting backends."""

from __future__ import annotations

import pytest
from bastion.audit import verify
from bastion.errors import Overloaded
from bastion.gateway import (
    AllBackendsFailed,
    BackendUnavailable,
    BadRequest,
    Gateway,
    MalformedResponse,
    RetryPolicy,
    Timeouts,
)
from bastion.sampling import SamplingParams

from .fault_backends import SCRIPT, ScriptedBackend
from .gateway_helpers import read_records

PARAMS = SamplingParams(max_tokens=64, temperature=0.0)
NO_RETRY = RetryPolicy(retries={})


async def test_healthy_primary_serves(audit_log, audit_path):
    primary, backup = ScriptedBackend("a"), ScriptedBackend("b")
    gw = Gateway({"a": primary, "b": backup}, audit=audit_log)
    result = await gw.generate("hello there", PARAMS, user="u1", tenant="t1")
    assert result.text == SCRIPT
    assert result.backend == "a" and result.outcome == "served" and result.finish_reason == "stop"
    assert result.token_ids == list(range(1000, 1000 + len(SCRIPT.split())))
    assert backup.requests == []
    (rec,) = read_records(audit_path)
    assert rec["outcome"] == "served" and rec["record_id"] == result.audit_id
    assert rec["model"]["name"] == "a-model" and rec["user"] == "u1" and rec["tenant"] == "t1"
    assert rec["sampling"]["max_tokens"] == 64 and rec["output_tokens"] == len(SCRIPT.split())


@pytest.mark.parametrize("fault", [
    {"raise_before": BackendUnavailable("connection refused")},
    {"raise_before": Overloaded("queue full")},
    {"end_without_finish": True},
])
async def test_failing_primary_falls_back(audit_log, audit_path, fault):
    primary, backup = ScriptedBackend("a", **fault), ScriptedBackend("b")
    gw = Gateway([primary, backup], audit=audit_log, retry_policy=NO_RETRY)
    result = await gw.generate("hi", PARAMS)
    assert result.backend == "1" and result.outcome == "fallback"
    (rec,) = read_records(audit_path)
    assert [a["outcome"] for a in rec["attempts"]][-1] == "ok"
    assert rec["attempts"][0]["backend"] == "0" and rec["attempts"][0]["outcome"] in ("error", "overloaded")


async def test_malformed_stream_is_classified(audit_log, audit_path):
    gw = Gateway([ScriptedBackend("a", end_without_finish=True), ScriptedBackend("b")], audit=audit_log)
    result = await gw.generate("hi", PARAMS)
    rec = read_records(audit_path)[0]
    assert rec["attempts"][0]["error_class"] == MalformedResponse.__name__
    assert result.text.endswith(SCRIPT.split(" ")[-1])


async def test_hanging_backend_times_out_then_fallback(audit_log, audit_path):
    hanging = ScriptedBackend("a", hang=True)
    gw = Gateway([hanging, ScriptedBackend("b")], audit=audit_log, timeouts=Timeouts(first_token_s=0.05))
    result = await gw.generate("hi", PARAMS)
    assert result.outcome == "fallback" and result.text == SCRIPT
    rec = read_records(audit_path)[0]
    assert rec["attempts"][0]["outcome"] == "timeout"
    assert "first_token timeout" in rec["attempts"][0]["error"]
    assert hanging.aborted == [hanging.requests[0].request_id]


async def test_stalled_stream_hits_stall_timeout(audit_log, audit_path):
    slow = ScriptedBackend("a", delay_s=0.2)
    gw = Gateway([slow], audit=audit_log, timeouts=Timeouts(stall_s=0.03), retry_policy=NO_RETRY)
    with pytest.raises(AllBackendsFailed) as info:
        await gw.generate("hi", PARAMS)
    assert info.value.timed_out
    rec = read_records(audit_path)[0]
    assert rec["outcome"] == "timeout" and "timeout" in rec["attempts"][0]["error"]


async def test_mid_stream_failure_continues_as_one_stream(audit_log, audit_path):
    words = len(SCRIPT.split())
    primary = ScriptedBackend("a", fail_after=5, fail_exc=BackendUnavailable("connection reset"))
    backup = ScriptedBackend("b", token_base=2000)
    gw = Gateway({"a": primary, "b": backup}, audit=audit_log, retry_policy=NO_RETRY)
    deltas = [d async for d in gw.stream("tell me", PARAMS)]
    streamed = "".join(d.text for d in deltas)
    assert streamed == SCRIPT  # every word exactly once, no restart, no gap
    assert [d.backend for d in deltas[:5]] == ["a"] * 5 and deltas[-1].backend == "b"
    assert backup.requests[0].continuation == " ".join(SCRIPT.split()[:5])
    assert backup.requests[0].params.max_tokens == PARAMS.max_tokens - 5
    assert deltas[-1].finished and deltas[-1].outcome == "fallback" and deltas[-1].output_tokens == words
    rec = read_records(audit_path)[0]
    assert rec["fallback_at_token"] == 5 and rec["attempts"][0]["tokens_sent"] == 5
    assert primary.aborted, "the failed generation must be aborted on its backend"


async def test_retry_same_backend_then_success(audit_log, audit_path):
    flaky = ScriptedBackend("a", raise_before=BackendUnavailable("refused"))
    backup = ScriptedBackend("b")

    class HealOnRetry(RetryPolicy):
        def delay(self, retry_number, retry_after=None, rng=None):
            flaky.heal()  # the outage ends while we back off
            return 0.0

    gw = Gateway({"a": flaky, "b": backup}, audit=audit_log,
                 retry_policy=HealOnRetry(retries={"connection": 1}))
    result = await gw.generate("hi", PARAMS)
    assert result.backend == "a" and backup.requests == []
    assert [a["outcome"] for a in read_records(audit_path)[0]["attempts"]] == ["error", "ok"]


async def test_bad_request_is_fatal_and_audited(audit_log, audit_path):
    backup = ScriptedBackend("b")
    gw = Gateway([ScriptedBackend("a", raise_before=BadRequest("HTTP 400: bad stop")), backup], audit=audit_log)
    with pytest.raises(BadRequest):
        await gw.generate("hi", PARAMS)
    assert backup.requests == []
    assert read_records(audit_path)[0]["outcome"] == "failed"


async def test_context_overflow_skips_backend_before_calling_it(audit_log, audit_path):
    small = ScriptedBackend("a", max_context=3)
    gw = Gateway({"small": small, "big": ScriptedBackend("b")}, audit=audit_log)
    result = await gw.generate("one two three four five", PARAMS)
    assert result.backend == "big" and small.requests == []
    assert read_records(audit_path)[0]["attempts"][0]["outcome"] == "context_overflow"


async def test_all_backends_failing_raises_and_audits(audit_log, audit_path):
    gw = Gateway([ScriptedBackend("a", raise_before=RuntimeError("boom")),
                  ScriptedBackend("b", raise_before=RuntimeError("bang"))], audit=audit_log)
    with pytest.raises(AllBackendsFailed, match="all 2 backend"):
        await gw.generate("hi", PARAMS)
    (rec,) = read_records(audit_path)
    assert rec["outcome"] == "failed" and len(rec["attempts"]) == 2
    assert verify(audit_path).ok
