"""Per-token logprobs through the Gateway: the output gate, streaming, generate, redaction, fallback.

The model tests run the real local engine (SmolLM2 on CPU) and compare with what ``AsyncLLM.generate``
gives directly. Every request gets its own prefix-cache salt (a tenant), so each one prefills the prompt
afresh and the logprobs are computed the same way each time.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from bastion.gateway import Gateway, OpenAIBackend, RetryPolicy
from bastion.gateway.guarding import OutputGate, output_guard_factory
from bastion.resilience.guardrails import BannedSubstringsGuard, GuardrailPipeline
from bastion.sampling import SamplingParams
from bastion.sampling.logprobs import TokenLogprobs

from .fault_backends import SCRIPT, ScriptedBackend
from .openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(300)
PROMPT = "Hello, my name is"
GREEDY = SamplingParams(max_tokens=24, temperature=0.0, logprobs=3)


@pytest.fixture
async def llm(smollm2_path):
    from bastion import AsyncLLM

    engine = AsyncLLM(str(smollm2_path), max_model_len=256, num_kv_blocks=64, num_threads=1)
    yield engine
    await engine.close()


async def _direct(llm, prompt: str, params: SamplingParams, salt: str) -> list[tuple[str, list[int], list]]:
    """``(text, token_ids, logprobs)`` of each delta of the engine's own stream (no Gateway)."""
    deltas = []
    async for out in llm.generate(prompt, replace(params, output_kind="delta"), request_id=f"direct-{salt}", cache_salt=salt):
        deltas.append((out.text, list(out.token_ids), list(out.logprobs or [])))
    return deltas


def _same_logprobs(got: list[TokenLogprobs], expected: list[TokenLogprobs]) -> None:
    """Same sampled tokens, ranks and top tokens (in order); logprobs equal up to float noise."""
    assert [lp.token_id for lp in got] == [lp.token_id for lp in expected]
    assert [lp.rank for lp in got] == [lp.rank for lp in expected]
    assert [list(lp.top_logprobs) for lp in got] == [list(lp.top_logprobs) for lp in expected]
    assert [lp.logprob for lp in got] == pytest.approx([lp.logprob for lp in expected], abs=1e-5)
    for g, e in zip(got, expected, strict=True):
        assert list(g.top_logprobs.values()) == pytest.approx(list(e.top_logprobs.values()), abs=1e-5)


def _lp(token_id: int) -> TokenLogprobs:
    """A made-up TokenLogprobs for the gate tests (the gate never looks inside)."""
    return TokenLogprobs(token_id, -0.5, 1, {token_id: -0.5, token_id + 1: -1.5})


# ---------------------------------------------------------------------- the output gate alone
def test_gate_releases_logprobs_with_their_ids_and_none_after_a_redaction():
    words = ["The", " card", " is", " 4111", " 1111", " 1111", " 1111", " and", " that", " is", " all", " ."]
    redact = GuardrailPipeline([BannedSubstringsGuard(["4111"], action="redact", stages=("output",))])
    gate = OutputGate(output_guard_factory(redact), check_every_chars=1)
    released = [gate.push(w, (i,), 1, (_lp(i),)) for i, w in enumerate(words)] + [gate.finish()]
    ids = [i for r in released for i in r.token_ids]
    logprobs = [lp for r in released for lp in r.logprobs]
    assert all(r.logprobs is not None and len(r.logprobs) == len(r.token_ids) for r in released)
    assert [lp.token_id for lp in logprobs] == ids == [0, 1, 2]  # up to the first redacted character only
    assert "4111" not in "".join(r.text for r in released) and sum(r.num_tokens for r in released) == len(words)

    unguarded = OutputGate(None)
    assert unguarded.push("a", (7,), 1, (_lp(7),)).logprobs == (_lp(7),)
    assert unguarded.push("b", (8,), 1).logprobs is None  # a backend that gave none: None, not ()
    checked = OutputGate(output_guard_factory(redact), check_every_chars=1)
    assert checked.push("plain text here", (1, 2, 3), 3).logprobs is None
    assert checked.finish().logprobs is None


async def test_openai_backend_gives_no_logprobs_and_asks_for_none():
    """An upstream names tokens by string, never by id: no TokenLogprobs, and nothing asked upstream."""
    with OpenAIServer() as server:
        remote = OpenAIBackend(server.base_url, "ok")
        gw = Gateway(remote)
        result = await gw.generate([{"role": "user", "content": "hi"}], GREEDY)
        deltas = [d async for d in gw.stream("q|", GREEDY)]
        await remote.aclose()
    assert result.text == SCRIPT and result.logprobs is None
    assert "".join(d.text for d in deltas) == SCRIPT and all(d.logprobs is None for d in deltas)
    assert all("logprobs" not in r["body"] and "top_logprobs" not in r["body"] for r in server.received)


# ---------------------------------------------------------------------- the real engine
async def test_greedy_logprobs_stream_generate_and_engine_agree(llm):
    direct = await _direct(llm, PROMPT, GREEDY, salt="direct")
    direct_ids = [t for _, ids, _ in direct for t in ids]
    direct_lps = [lp for _, _, lps in direct for lp in lps]
    gw = Gateway(llm)

    deltas = [d async for d in gw.stream(PROMPT, GREEDY, tenant="streamed")]
    for d in deltas:
        assert d.logprobs is not None and len(d.logprobs) == len(d.token_ids)
        assert [lp.token_id for lp in d.logprobs] == list(d.token_ids)
    streamed = [lp for d in deltas for lp in d.logprobs]
    assert len(streamed) == deltas[-1].output_tokens == len(direct_ids) > 0
    for lp in streamed:
        assert lp.rank == 1, "greedy samples the most likely token"
        assert lp.num_top == 3 and next(iter(lp.top_logprobs)) == lp.token_id
        top = list(lp.top_logprobs.values())
        assert top == sorted(top, reverse=True) and lp.logprob == top[0] <= 0.0

    result = await gw.generate(PROMPT, GREEDY, tenant="generated")
    assert result.token_ids == [t for d in deltas for t in d.token_ids] == direct_ids
    assert result.logprobs is not None
    _same_logprobs(result.logprobs, streamed)
    _same_logprobs(streamed, direct_lps)

    plain = await gw.generate(PROMPT, SamplingParams(max_tokens=4, temperature=0.0), tenant="plain")
    assert plain.logprobs is None and plain.token_ids == direct_ids[:4]  # not asked for: none


async def test_logprobs_stop_at_an_output_redaction(llm):
    direct = await _direct(llm, PROMPT, GREEDY, salt="direct")
    direct_ids = [t for _, ids, _ in direct for t in ids]
    direct_lps = [lp for _, _, lps in direct for lp in lps]
    # a word the model says a few tokens in, as one whole token (each delta here is one token)
    texts = [text for text, ids, _ in direct if len(ids) == 1]
    assert len(texts) == len(direct_ids), "one token per delta"
    k = next(i for i, text in enumerate(texts) if i >= 3 and text.strip().isalpha() and len(text.strip()) >= 4
             and i + 1 < len(texts) and not texts[i + 1][:1].isalpha()
             and not re.search(rf"\b{text.strip()}\b", "".join(texts[:i]), re.IGNORECASE))
    word = texts[k].strip()
    guard = GuardrailPipeline([BannedSubstringsGuard([word], action="redact", whole_words=True,
                                                     stages=("output",), name="redact")])
    gw = Gateway(llm, guardrails=guard, retry_policy=RetryPolicy(fallback_on_block=False))

    deltas = [d async for d in gw.stream(PROMPT, GREEDY, tenant="streamed")]
    streamed_text = "".join(d.text for d in deltas)
    assert "[REDACTED" in streamed_text and not re.search(rf"\b{word}\b", streamed_text, re.IGNORECASE)
    redacted_at = next(i for i, d in enumerate(deltas) if "[REDACTED" in d.text)
    for i, d in enumerate(deltas):
        assert d.logprobs is not None and len(d.logprobs) == len(d.token_ids)
        if i > redacted_at:
            assert d.token_ids == () and d.logprobs == ()
    streamed_ids = [t for d in deltas for t in d.token_ids]
    streamed_lps = [lp for d in deltas for lp in d.logprobs]
    assert streamed_ids == direct_ids[:k], "ids (and logprobs) up to the redacted token, none after"
    _same_logprobs(streamed_lps, direct_lps[:k])
    assert deltas[-1].output_tokens == len(direct_ids)  # the counts still flow

    result = await gw.generate(PROMPT, GREEDY, tenant="generated")
    assert result.logprobs is not None and len(result.logprobs) == len(result.token_ids) == k
    _same_logprobs(result.logprobs, direct_lps[:k])


async def test_fallback_mid_stream_takes_logprobs_from_the_new_backend(llm):
    """A scripted backend (no logprobs) fails after 3 words; the engine continues with its own logprobs."""
    scripted = ScriptedBackend("a", script="Once upon a time there was a fox .", fail_after=3)
    gw = Gateway({"scripted": scripted, "local": llm}, retry_policy=RetryPolicy(retries={}))
    deltas = [d async for d in gw.stream("Tell me a story.", GREEDY)]
    assert [d.backend for d in deltas[:3]] == ["scripted"] * 3 and deltas[-1].backend == "local"
    assert all(d.logprobs is None for d in deltas if d.backend == "scripted")
    local = [d for d in deltas if d.backend == "local"]
    assert sum(len(d.token_ids) for d in local) > 0
    for d in local:
        assert d.logprobs is not None and [lp.token_id for lp in d.logprobs] == list(d.token_ids)

    result = await gw.generate("Tell me a story.", GREEDY)
    assert result.backend == "local" and result.token_ids[:3] == [1000, 1001, 1002]
    assert result.logprobs is not None
    assert [lp.token_id for lp in result.logprobs] == result.token_ids[3:]  # the engine's part only
