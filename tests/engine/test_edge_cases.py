"""Engine edge cases found by a bug hunt: request-id reuse, deadlines, CLI errors, random op sequences."""

from __future__ import annotations

import asyncio

import bastion
import pytest
from bastion import SamplingParams
from bastion.__main__ import main as cli_main
from bastion.engine.request import Deadlines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .engine_helpers import async_engine

pytestmark = pytest.mark.timeout(600)

LONG = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)


async def _first_then_release(engine: bastion.AsyncLLM, request_id: str, params: SamplingParams,
                              deadlines: Deadlines | None = None) -> None:
    """Start a request, take one output, then leave the stream (as a disconnecting client does)."""
    stream = engine.generate("Once upon a time", params, request_id=request_id, deadlines=deadlines)
    await stream.__anext__()
    await stream.aclose()


async def test_reused_request_id_after_release_gets_its_own_outputs(smollm2_path) -> None:
    """A client that drops a stream and retries under the same id must get the new request's
    outputs, not the old one's leftovers and its "abort"."""
    engine = async_engine(smollm2_path, num_kv_blocks=128, max_model_len=512)
    try:
        delta = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, output_kind="delta")
        await _first_then_release(engine, "r", delta)
        outs = [o async for o in engine.generate("Once upon a time", delta, request_id="r")]
        assert outs[-1].finish_reason == "length"
        assert sum(len(o.token_ids) for o in outs) == 12
        assert outs[-1].num_total_output_tokens == 12
    finally:
        await engine.close()


async def test_reused_request_id_does_not_inherit_old_deadline(smollm2_path) -> None:
    """Deadlines belong to one request: a retry under the same id without deadlines must not time out."""
    engine = async_engine(smollm2_path, num_kv_blocks=128, max_model_len=512)
    try:
        await _first_then_release(engine, "r", LONG, deadlines=Deadlines(total=0.3))
        outs = [o async for o in engine.generate("Once upon a time", LONG, request_id="r")]
        assert outs[-1].finish_reason == "length", outs[-1].metrics.timeout_reason
        assert len(outs[-1].token_ids) == 40
    finally:
        await engine.close()


async def test_release_after_final_output_was_queued_does_not_swallow_next_request(smollm2_path) -> None:
    """Releasing a stream whose final output already arrived must not make the engine drop the
    outputs of a later request with the same id (it would hang)."""
    engine = async_engine(smollm2_path, num_kv_blocks=128, max_model_len=512)
    try:
        rid = engine.start("Hello", SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))
        for _ in range(400):  # let the final output land in the stream without consuming it
            if engine.stats()["num_unfinished"] == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        engine.release(rid)
        outs = [o async for o in engine.generate("Hello", SamplingParams(max_tokens=2, temperature=0.0),
                                                 request_id=rid)]
        assert outs[-1].finished
    finally:
        await engine.close()


# ----- CLI -------------------------------------------------------------------------------------
def test_cli_bad_model_path_is_a_clear_error(capsys) -> None:
    """A missing model is a one-line message on stderr and a non-zero exit, not a traceback."""
    code = cli_main(["generate", "hi", "--model", "/nonexistent/model.gguf"])
    err = capsys.readouterr().err
    assert code != 0
    assert "model not found" in err and "Traceback" not in err


def test_cli_bad_sampling_value_is_a_clear_error(capsys) -> None:
    """A bad sampling flag (``--max-tokens 0``) fails before the model loads, naming the field."""
    code = cli_main(["generate", "hi", "--max-tokens", "0"])
    err = capsys.readouterr().err
    assert code != 0
    assert "max_tokens" in err and "Traceback" not in err


# ----- random add / abort / step sequences against EngineCore ---------------------------------
_ADD = st.tuples(
    st.just("add"), st.integers(1, 31), st.integers(1, 40),
    st.sampled_from(["cumulative", "delta", "final_only"]), st.sampled_from([(), (" the",), ("e",), ("\n",)]),
    st.integers(0, 3), st.booleans(), st.sampled_from([None, 1]), st.integers(0, 5),
)
_OPS = st.lists(st.one_of(_ADD, st.tuples(st.just("abort"), st.integers(0, 30)), st.tuples(st.just("step"))),
                max_size=30)


@pytest.fixture(scope="module")
def tiny_llm(smollm2_path) -> bastion.LLM:
    """A pool small enough that random traffic is preempted and chunked."""
    return bastion.LLM(model=str(smollm2_path), num_kv_blocks=12, block_size=4, max_model_len=32,
                       max_num_seqs=4, max_num_batched_tokens=16)


def test_random_add_abort_step_ends_each_request_once_and_frees_the_pool(tiny_llm: bastion.LLM) -> None:
    """Whatever the interleaving (aborts of unknown, finished or reused ids included), every request
    ends exactly once, delta outputs add up to the whole output with aligned logprobs, and the pool is
    whole again when idle."""
    core = tiny_llm.engine
    counter = iter(range(10**9))

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_OPS)
    def run(ops: list[tuple]) -> None:
        params: dict[str, SamplingParams] = {}
        finals: dict[str, bastion.RequestOutput] = {}
        deltas: dict[str, tuple[list[int], list[str], list[dict]]] = {}

        def consume(outputs: list) -> None:
            for out in outputs:
                assert out.request_id not in finals, f"output after the final one: {out.request_id}"
                if params[out.request_id].output_kind == "delta":
                    toks, texts, lps = deltas.setdefault(out.request_id, ([], [], []))
                    toks += out.token_ids
                    texts.append(out.text)
                    lps += out.logprobs or []
                if out.finished:
                    finals[out.request_id] = out

        for op in ops:
            if op[0] == "add":
                _, n, max_tokens, kind, stop, min_tokens, ignore_eos, logprobs, seed = op
                rid = f"h{next(counter)}"
                params[rid] = SamplingParams(
                    max_tokens=max_tokens, temperature=0.8, seed=seed, output_kind=kind, stop=stop,
                    min_tokens=min(min_tokens, max_tokens), ignore_eos=ignore_eos, logprobs=logprobs)
                core.add_request(tiny_llm.processor.process_inputs(
                    rid, [(7 * i + seed) % 1000 + 10 for i in range(n)], params[rid]))
            elif op[0] == "abort":
                if params:
                    core.abort(list(params)[op[1] % len(params)])
                assert core.abort("unknown-id") is False
            else:
                consume(core.step())
        for _ in range(2000):
            if not core.has_unfinished():
                break
            consume(core.step())
        assert set(finals) == set(params)
        stats = core.stats()
        assert stats["num_free_blocks"] == stats["num_total_blocks"], stats
        assert stats["num_running"] == stats["num_waiting"] == 0, stats
        for rid, final in finals.items():
            p = params[rid]
            if p.output_kind == "delta":
                toks, texts, lps = deltas[rid]
                text = "".join(texts)
            else:
                toks, text, lps = final.token_ids, final.text, final.logprobs or []
            assert len(toks) == final.num_total_output_tokens <= p.max_tokens
            if p.logprobs is not None:
                assert [lp.token_id for lp in lps] == toks
            if final.finish_reason == "stop" and isinstance(final.stop_reason, str):
                assert final.stop_reason in p.stop and not text.endswith(final.stop_reason)

    run()
