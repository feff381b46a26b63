"""Random Unicode, huge prompts, malformed params and cancellation: a clean result or a clear error."""

from __future__ import annotations

import asyncio

import pytest
from bastion.audit import AuditLog, verify
from bastion.errors import BastionError
from bastion.gateway import Gateway, GatewayResult
from bastion.resilience.guardrails import default_pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fault_backends import ScriptedBackend
from .gateway_helpers import read_records

CLEAR_ERRORS = (ValueError, TypeError, BastionError)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

param_values = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                         st.text(max_size=8), st.lists(st.text(max_size=4), max_size=3))
params_strategy = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["max_tokens", "temperature", "top_p", "stop", "seed", "n", "bogus"]),
                    param_values, max_size=4),
    st.integers(), st.text(max_size=5),
)
prompt_strategy = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0xE0000, max_codepoint=0xE007F), max_size=20),
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "robot"]),
                                    "content": st.one_of(st.text(max_size=50), st.integers())}), max_size=3),
    st.lists(st.integers(0, 50), max_size=3), st.none(), st.integers(),
)


def _gateway(tmp_path, name: str) -> tuple[Gateway, AuditLog]:
    log = AuditLog(tmp_path / f"{name}.jsonl", fsync="never")
    gw = Gateway({"small": ScriptedBackend("small", max_context=64), "big": ScriptedBackend("big")},
                 audit=log, guardrails=default_pipeline())
    return gw, log


def _check(result: GatewayResult) -> None:
    assert isinstance(result.text, str)
    assert result.outcome in ("served", "fallback", "blocked")
    assert result.finish_reason in ("stop", "length", "content_filter")


@FAST
@given(prompt=prompt_strategy, params=params_strategy)
def test_any_input_gives_a_result_or_a_clear_error(tmp_path, prompt, params):
    gw, log = _gateway(tmp_path, "fuzz")

    async def run() -> None:
        try:
            _check(await gw.generate(prompt, params, user="fuzz"))
        except CLEAR_ERRORS as e:
            assert str(e), f"{type(e).__name__} without a message"

    asyncio.run(run())
    log.close()
    assert verify(log.path).ok


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(10_000, 100_000),
       char=st.characters(blacklist_categories=("Cs",)).filter(lambda c: not c.isspace()))
def test_huge_prompts_skip_small_context_and_are_served(tmp_path, size, char):
    gw, log = _gateway(tmp_path, "huge")
    prompt = " ".join([char] * (size // 2))

    async def run() -> GatewayResult | None:
        try:
            return await gw.generate(prompt, {"max_tokens": 3})
        except CLEAR_ERRORS:
            return None

    result = asyncio.run(run())
    log.close()
    if result is not None:
        _check(result)
        assert result.backend in ("big", None)
    assert verify(log.path).records >= 1


async def test_cancelled_request_aborts_backend_and_is_audited(audit_log, audit_path):
    slow = ScriptedBackend("a", delay_s=0.05)
    gw = Gateway([slow], audit=audit_log)
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in gw.stream("hi", {"max_tokens": 50}):
            first_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    audit_log.flush()
    (rec,) = read_records(audit_path)
    assert rec["outcome"] == "aborted" and rec["attempts"][0]["outcome"] == "aborted"
    assert slow.aborted == [slow.requests[0].request_id]


async def test_client_closing_the_stream_aborts_at_once(audit_log, audit_path):
    backend = ScriptedBackend("a")
    gw = Gateway([backend], audit=audit_log)
    stream = gw.stream("hi", {"max_tokens": 50})
    await anext(stream)
    await stream.aclose()
    assert backend.aborted == [backend.requests[0].request_id]  # not left to the garbage collector
    audit_log.flush()
    (rec,) = read_records(audit_path)
    assert rec["outcome"] == "aborted" and [a["outcome"] for a in rec["attempts"]] == ["aborted"]


async def test_closing_after_the_last_delta_is_not_an_abort(audit_log, audit_path):
    backend = ScriptedBackend("a")
    gw = Gateway([backend], audit=audit_log)
    stream = gw.stream("hi", {"max_tokens": 3})
    async for delta in stream:
        if delta.finished:
            break  # the client stops on the final delta and closes the stream
    await stream.aclose()
    audit_log.flush()
    (rec,) = read_records(audit_path)
    assert rec["outcome"] == "served" and [a["outcome"] for a in rec["attempts"]] == ["ok"]
    assert backend.aborted == []
