"""The real local engine (SmolLM2 on CPU) as primary, the loopback HTTP server as fallback."""

from __future__ import annotations

import asyncio

import pytest
from bastion.audit import verify
from bastion.gateway import Gateway, OpenAIBackend, RetryPolicy
from bastion.resilience.guardrails import BannedSubstringsGuard, GuardrailPipeline
from bastion.sampling import SamplingParams

from .fault_backends import SCRIPT
from .gateway_helpers import read_records
from .openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(300)
GREEDY = SamplingParams(max_tokens=8, temperature=0.0)


@pytest.fixture
async def llm(smollm2_path):
    from bastion import AsyncLLM

    engine = AsyncLLM(str(smollm2_path), max_model_len=256, num_kv_blocks=64, num_threads=1)
    yield engine
    await engine.close()


async def _direct(llm, prompt: str, params: SamplingParams) -> tuple[str, list[int]]:
    text, ids = "", []
    async for out in llm.generate(prompt, params, request_id="direct"):
        text, ids = out.text, list(out.token_ids)
    return text, ids


async def test_gateway_matches_direct_engine_and_audits_model_facts(llm, audit_log, audit_path):
    expected_text, expected_ids = await _direct(llm, "Hello, my name is", GREEDY)
    gw = Gateway(llm, audit=audit_log)  # an AsyncLLM is wrapped in LocalBackend
    result = await gw.generate("Hello, my name is", GREEDY, user="u")
    assert result.text == expected_text and result.token_ids == expected_ids
    assert result.backend == "0" and result.finish_reason == "length" and result.output_tokens == 8
    rec = read_records(audit_path)[0]
    assert rec["model"]["weights_sha256"] == llm.weights_sha256() == llm.model_config.weights_sha256
    # how the answer was computed, for reproducing it: block types, activation precision, the C++ decoder
    numerics = rec["model"]["numerics"]
    assert numerics == llm.numerics and "GGUF blocks Q4_1+Q8_0" in numerics and "activations int16" in numerics
    assert "one-call C++ decoder" in numerics
    assert rec["queue_time_s"] is not None and rec["ttft_s"] > 0 and rec["prompt_tokens"] > 0


async def test_output_block_aborts_engine_request_and_frees_kv(llm, audit_log, audit_path):
    first_word, _ = await _direct(llm, "Hello, my name is", SamplingParams(max_tokens=1, temperature=0.0))
    guard = GuardrailPipeline([BannedSubstringsGuard([first_word.strip()], name="banned")])
    gw = Gateway(llm, audit=audit_log, guardrails=guard, retry_policy=RetryPolicy(fallback_on_block=False))
    result = await gw.generate("Hello, my name is", SamplingParams(max_tokens=200, temperature=0.0))
    assert result.refused and first_word.strip() not in result.text
    for _ in range(100):  # the abort is applied by the engine thread within a step
        stats = llm.stats()
        if stats["num_running"] == 0 and stats["num_used_blocks"] == 0:
            break
        await asyncio.sleep(0.02)
    assert stats["num_running"] == 0 and stats["num_used_blocks"] == 0
    assert read_records(audit_path)[0]["attempts"][0]["tokens_sent"] < 200


async def test_local_failure_mid_stream_continues_on_loopback_server(llm, audit_log, audit_path):
    attempt_ids: list[str] = []

    async def kill_local_after_first_token(event):  # an engine-side abort in the middle of the stream
        if event.data["backend"] == "local":
            await llm.abort(attempt_ids[-1])

    hooks = {"routed": lambda e: attempt_ids.append(e.data["backend_request_id"]),
             "first_token": kill_local_after_first_token}
    with OpenAIServer() as server:
        remote = OpenAIBackend(server.base_url, "ok")
        gw = Gateway({"local": llm, "remote": remote}, audit=audit_log, retry_policy=RetryPolicy(retries={}),
                     hooks=hooks)
        chat = [{"role": "user", "content": "Write a long story about a fox."}]
        deltas = [d async for d in gw.stream(chat, SamplingParams(max_tokens=100, temperature=0.0))]
        await remote.aclose()
    local_text = "".join(d.text for d in deltas if d.backend == "local")
    assert local_text, "the local engine streamed tokens before it was aborted"
    assert server.received[0]["body"]["messages"][-1] == {"role": "assistant", "content": local_text}
    assert "".join(d.text for d in deltas) == local_text + SCRIPT  # one stream, nothing repeated
    rec = read_records(audit_path)[0]
    assert [a["outcome"] for a in rec["attempts"]] == ["error", "ok"] and rec["outcome"] == "fallback"
    assert rec["fallback_at_token"] == rec["attempts"][0]["tokens_sent"] > 0
    assert verify(audit_path).ok


async def test_prompt_beyond_local_context_goes_straight_to_remote(llm, audit_log, audit_path):
    with OpenAIServer() as server:
        remote = OpenAIBackend(server.base_url, "ok")
        gw = Gateway({"local": llm, "remote": remote}, audit=audit_log)
        result = await gw.generate("word " * 400, SamplingParams(max_tokens=5))
        await remote.aclose()
    assert result.backend == "remote"
    assert read_records(audit_path)[0]["attempts"][0]["outcome"] == "context_overflow"


async def test_tenants_do_not_share_prefix_cache_hits(llm, audit_log):
    """The tenant salts the local engine's prefix cache: the same prompt hits only within a tenant."""
    gw = Gateway(llm, audit=audit_log)
    prompt = "Shared system instructions for every caller of this service. " * 3

    async def hits_after(tenant: str) -> int:
        before = llm.stats()["prefix_cache_hits"]
        await gw.generate(prompt, SamplingParams(max_tokens=1, temperature=0.0), tenant=tenant)
        return llm.stats()["prefix_cache_hits"] - before

    assert await hits_after("acme") == 0
    assert await hits_after("acme") > 0  # same tenant: the prompt's full blocks are reused
    assert await hits_after("globex") == 0  # another tenant: no hit, no timing side channel


async def test_structured_outputs_reach_the_local_engine_and_the_audit_record(llm, audit_log, audit_path):
    gw = Gateway(llm, audit=audit_log)
    params = SamplingParams(max_tokens=40, temperature=0.0, structured_outputs={"choice": ["red", "blue"]})
    result = await gw.generate([{"role": "user", "content": "Name a colour."}], params, user="u")
    assert result.text in ("red", "blue") and result.finish_reason == "stop"
    with pytest.raises(ValueError, match=r"structured_outputs\.regex"):  # refused before anything is queued
        await gw.generate("hi", SamplingParams(max_tokens=4, structured_outputs={"regex": "(("}), user="u")
    await gw.aclose()
    records = read_records(audit_path)
    assert records[0]["sampling"]["structured_outputs"] == {"json": None, "regex": None, "choice": ["red", "blue"],
                                                            "grammar": None, "json_object": False}
    assert records[1]["outcome"] != "served" and records[1]["sampling"]["structured_outputs"]["regex"] == "(("
    assert llm.stats()["num_used_blocks"] == 0
