"""Structured outputs end to end on the real SmolLM2: outputs valid by construction (property-based over
generated JSON schemas, regex, choice, grammar, json_object) at temperature 0 and 1, unconstrained
neighbours untouched, abort / preemption / prefix caching, every bad input named, and the finish reasons."""

from __future__ import annotations

import asyncio
import json
import re

import bastion
import jsonschema
import pytest
from bastion import SamplingParams
from bastion import StructuredOutputsParams as S
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .engine_helpers import async_engine

pytestmark = pytest.mark.timeout(900)

ASK = "Answer with a JSON object that fits the description: a small example record."
PATTERNS = [r"^[A-Z]{2}-[0-9]{3}$", r"^[a-z]{1,8}$", r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"]


@pytest.fixture(scope="module")
def llm(smollm2_path) -> bastion.LLM:
    return bastion.LLM(model=str(smollm2_path), num_kv_blocks=512, max_model_len=1024)


def _chat(llm: bastion.LLM, prompts: list[str], params: list[SamplingParams]) -> list[bastion.RequestOutput]:
    return llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)


def _all_free(llm: bastion.LLM) -> bool:
    stats = llm.stats()
    return stats["num_free_blocks"] == stats["num_total_blocks"] and not llm.engine.requests


# ----- schemas, generated ----------------------------------------------------------------------
def _leaf() -> st.SearchStrategy[dict]:
    return st.one_of(
        st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
                  st.integers(-100, 100), st.integers(0, 1000)),
        st.builds(lambda lo, span: {"type": "number", "minimum": lo, "maximum": lo + span},
                  st.integers(-50, 50), st.integers(1, 100)),
        st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(1, 16)),
        st.sampled_from(PATTERNS).map(lambda p: {"type": "string", "pattern": p}),
        st.lists(st.sampled_from(["red", "green", "blue", "small", "large", 3, True]), min_size=1, max_size=4,
                 unique=True).map(lambda values: {"enum": values}),
        st.just({"type": "boolean"}),
    )


def _object(children: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    names = st.sampled_from(["id", "name", "size", "color", "count", "tags", "owner", "price", "ok"])
    return st.dictionaries(names, children, min_size=1, max_size=3).map(lambda props: {
        "type": "object", "properties": props, "required": sorted(props), "additionalProperties": False})


def _array(children: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    return st.builds(lambda item, lo, extra: {"type": "array", "items": item, "minItems": lo, "maxItems": lo + extra},
                     children, st.integers(0, 2), st.integers(0, 2))


SCHEMAS = _object(st.recursive(_leaf(), lambda inner: st.one_of(_object(inner), _array(inner)), max_leaves=5))


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(schema=SCHEMAS)
def test_generated_schemas_give_valid_json_at_temperature_0_and_1(llm: bastion.LLM, schema: dict) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    so = S(json=schema)
    params = [SamplingParams(max_tokens=160, temperature=0.0, structured_outputs=so),
              SamplingParams(max_tokens=160, temperature=1.0, seed=1, structured_outputs=so),
              SamplingParams(max_tokens=160, temperature=1.0, seed=2, top_p=0.95, structured_outputs=so)]
    outs = _chat(llm, [ASK + " Schema: " + json.dumps(schema)] * len(params), params)
    for out in outs:
        assert out.finish_reason in ("stop", "length"), out.metrics.error
        if out.finish_reason == "stop":
            jsonschema.validate(json.loads(out.text), schema)
    assert sum(o.finish_reason == "stop" for o in outs) >= 2, [o.text for o in outs]
    assert _all_free(llm)


# ----- the other kinds -------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_regex_choice_grammar_and_json_object(llm: bastion.LLM, temperature: float) -> None:
    phone = r"\(\d{3}\) \d{3}-\d{4}"
    arith = 'start: expr\nexpr: NUM (OP NUM)*\nNUM: /[0-9]{1,3}/\nOP: "+" | "-" | "*"'
    cases = [(S(regex=phone), "What is the phone number of the town hall?"),
             (S(choice=["positive", "negative", "neutral"]), "Sentiment of: 'I loved this film!'"),
             (S(grammar=arith), "Write an arithmetic expression that equals 12."),
             (S(json_object=True), "Describe a cat as JSON.")]
    params = [SamplingParams(max_tokens=96, temperature=temperature, seed=5, structured_outputs=so) for so, _ in cases]
    outs = _chat(llm, [prompt for _, prompt in cases], params)
    assert [o.finish_reason for o in outs[:3]] == ["stop"] * 3, [(o.text, o.metrics.error) for o in outs]
    assert re.fullmatch(phone, outs[0].text)
    assert outs[1].text in ("positive", "negative", "neutral")
    assert re.fullmatch(r"[0-9]{1,3}([-+*][0-9]{1,3})*", outs[2].text)
    if outs[3].finish_reason == "stop":
        assert isinstance(json.loads(outs[3].text), dict)
    else:
        assert outs[3].text.startswith("{")
    assert _all_free(llm)


def test_unconstrained_requests_in_a_mixed_batch_get_the_tokens_they_get_alone(llm: bastion.LLM) -> None:
    free = [SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)] * 3
    prompts = ["The capital of France is", "Write a haiku about rain.", "List three fruits."]
    alone = [o.token_ids for o in _chat(llm, prompts, free)]
    schema = {"type": "object", "properties": {"fruit": {"enum": ["apple", "pear"]}, "n": {"type": "integer"}},
              "required": ["fruit", "n"], "additionalProperties": False}
    constrained = [SamplingParams(max_tokens=40, temperature=t, seed=3, structured_outputs=S(json=schema))
                   for t in (0.0, 1.0, 0.7)]
    outs = _chat(llm, [prompts[0], "Pick a fruit.", prompts[1], "Count pears.", prompts[2], "Fruit JSON please."],
                 [free[0], constrained[0], free[1], constrained[1], free[2], constrained[2]])
    assert [outs[i].token_ids for i in (0, 2, 4)] == alone
    for out in (outs[1], outs[3], outs[5]):
        assert out.finish_reason == "stop"
        jsonschema.validate(json.loads(out.text), schema)
    assert _all_free(llm)


def test_jump_forward_appends_forced_tokens_and_logprobs_turn_it_off(llm: bastion.LLM) -> None:
    schema = {"type": "object", "properties": {"first_name": {"type": "string", "maxLength": 12},
                                               "last_name": {"type": "string", "maxLength": 12}},
              "required": ["first_name", "last_name"], "additionalProperties": False}
    so = S(json=schema)
    jumped, scored = _chat(llm, ["Name a painter as JSON."] * 2,
                           [SamplingParams(max_tokens=64, temperature=0.0, structured_outputs=so),
                            SamplingParams(max_tokens=64, temperature=0.0, logprobs=2, structured_outputs=so)])
    for out in (jumped, scored):
        assert out.finish_reason == "stop"
        jsonschema.validate(json.loads(out.text), schema)
    assert jumped.metrics.num_forced_tokens >= 4  # '{"first_name": "' and '", "last_name": "' at least
    assert jumped.metrics.num_forced_tokens <= jumped.metrics.num_generated_tokens == len(jumped.token_ids)
    assert scored.metrics.num_forced_tokens == 0 and scored.logprobs is not None
    assert len(scored.logprobs) == len(scored.token_ids)
    for position in scored.logprobs:  # the masked distribution: every reported token is one the grammar allows
        assert sum(pow(2.718281828, lp) for lp in position.values()) <= 1.0 + 1e-4


def test_seeded_constrained_request_is_reproducible(llm: bastion.LLM) -> None:
    """Same seed, same tokens (jump-forward consumes no random numbers). Not compared across batch shapes:
    the CPU's block kernel (int16 activations) and panel GEMM (fp32) serve different step sizes, which can
    move a temperature-1 draw that sits on a boundary whether or not a grammar is involved. For the same
    reason both runs are cold (their own cache salt: no prefix-cache hit shortens a prefill) and the grammar
    is compiled first (a request waiting for its compile joins the batch later)."""
    so = S(json={"type": "object", "properties": {"breed": {"type": "string", "maxLength": 20}}})
    params = SamplingParams(max_tokens=48, temperature=1.0, seed=42, structured_outputs=so)
    llm.engine.structured.compiler.compile(so).result(timeout=30)
    others = [SamplingParams(max_tokens=30, temperature=1.0, seed=1, ignore_eos=True),
              SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)]
    prompts = ["A JSON object about dogs.", "Hello!", "Tell a joke."]
    first, second = (llm.generate(prompts, [params, *others], use_tqdm=False, cache_salt=f"run-{i}")
                     for i in range(2))
    assert [o.token_ids for o in first] == [o.token_ids for o in second]
    assert first[0].text.startswith("{")


# ----- finish reasons --------------------------------------------------------------------------
def test_an_unfinished_grammar_at_max_tokens_ends_with_length(llm: bastion.LLM) -> None:
    schema = {"type": "object", "properties": {"story": {"type": "string", "minLength": 200}}, "required": ["story"]}
    out = _chat(llm, ["Tell a long story as JSON."],
                [SamplingParams(max_tokens=12, temperature=0.0, structured_outputs=S(json=schema))])[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 12
    assert out.text.startswith('{"story": "')
    assert _all_free(llm)


def test_the_grammar_ending_finishes_with_stop_even_with_ignore_eos_or_min_tokens(llm: bastion.LLM) -> None:
    outs = _chat(llm, ["Yes or no?"] * 2, [
        SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, structured_outputs=S(choice=["yes", "no"])),
        SamplingParams(max_tokens=30, min_tokens=10, temperature=0.0, structured_outputs=S(regex="(yes|no)")),
    ])
    for out in outs:
        assert out.finish_reason == "stop" and out.text in ("yes", "no") and out.stop_reason is None


# ----- lifecycle: abort, preemption, prefix cache, compile wait --------------------------------
def test_abort_frees_everything_while_generating_and_while_compiling(smollm2_path) -> None:
    async def run() -> None:
        engine = async_engine(smollm2_path, num_kv_blocks=64)
        try:
            params = SamplingParams(max_tokens=200, temperature=1.0, structured_outputs=S(
                json={"type": "object", "properties": {"essay": {"type": "string"}}, "required": ["essay"]}))
            seen = 0
            async for out in engine.generate([{"role": "user", "content": "Essay as JSON."}], params, request_id="a"):
                seen += len(out.token_ids)
                if seen >= 5:
                    await engine.abort("a")
                    break
            # aborted before its grammar can have compiled (a schema no request used before)
            engine.start("Hi", SamplingParams(max_tokens=5, structured_outputs=S(
                json={"type": "object", "properties": {"never_compiled_before_abort": {"type": "integer"}}})),
                request_id="b")
            await engine.abort("b")
            for _ in range(100):
                snap = engine._thread.snapshot
                if snap["num_free_blocks"] == snap["num_total_blocks"] and snap["num_unfinished"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert snap["num_free_blocks"] == snap["num_total_blocks"] and snap["num_unfinished"] == 0
        finally:
            await engine.close()

    asyncio.run(run())


def test_preempted_constrained_requests_resume_valid_and_unchanged(llm: bastion.LLM, smollm2_path) -> None:
    """A pool too small for the batch preempts a constrained request by recompute: its tokens (forced ones
    included) stay, its matcher with them, and it ends exactly as with room to spare."""
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "population": {"type": "integer", "minimum": 0, "maximum": 10**8},
                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["city", "population", "country"], "additionalProperties": False}
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
               "The three primary colors are"]
    params = [SamplingParams(max_tokens=48, temperature=0.0, structured_outputs=S(json=schema))] * 4
    llm.engine.structured.compiler.compile(params[0].structured_outputs).result(timeout=30)  # both runs admit at once
    roomy = [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    tiny = bastion.LLM(model=str(smollm2_path), num_kv_blocks=12, block_size=8, max_model_len=96,
                       enable_prefix_caching=False)
    outs = tiny.generate(prompts, params, use_tqdm=False)
    assert sum(o.metrics.num_preemptions for o in outs) > 0
    assert [o.token_ids for o in outs] == roomy
    for out in outs:
        jsonschema.validate(json.loads(out.text), schema)
    assert _all_free(tiny)


def test_constrained_prompts_hit_the_prefix_cache(llm: bastion.LLM) -> None:
    system = "You are a precise assistant that always answers in JSON. " * 6
    params = SamplingParams(max_tokens=24, temperature=0.0, structured_outputs=S(json_object=True))
    first, second = (llm.generate(system + q, params, use_tqdm=False)[0] for q in ("Colour?", "Shape?"))
    assert second.metrics.num_cached_tokens >= 48 and first.text.startswith("{")


def test_a_compile_past_the_timeout_ends_the_request_with_an_error_naming_it(smollm2_path) -> None:
    slow = bastion.LLM(model=str(smollm2_path), num_kv_blocks=32, structured_outputs_timeout=1e-6)
    schema = {"type": "object", "properties": {"unique_to_the_timeout_test": {"type": "string"}}}
    out = slow.generate("Hi", SamplingParams(max_tokens=8, structured_outputs=S(json=schema)), use_tqdm=False)[0]
    assert out.finish_reason == "error"
    assert "structured_outputs.json: the grammar did not compile within" in out.metrics.error
    assert _all_free(slow)


# ----- bad input -------------------------------------------------------------------------------
BAD = [
    ({"json": {"type": "strin"}}, r"structured_outputs\.json: .*strin"),
    ({"json": {"type": "string", "pattern": "[a-"}}, r"structured_outputs\.json"),
    ({"json": {"not": {"type": "integer"}}}, r"structured_outputs\.json: .*Unimplemented"),
    ({"json": "{not json"}, r"structured_outputs\.json: not valid JSON"),
    ({"regex": "(unclosed"}, r"structured_outputs\.regex"),
    ({"grammar": "start: missing_rule"}, r"structured_outputs\.grammar: .*missing_rule"),
    ({"choice": []}, r"structured_outputs\.choice"),
    ({"regex": "a", "choice": ["a"]}, r"structured_outputs: set exactly one"),
    ({}, r"structured_outputs: set exactly one"),
]


@pytest.mark.parametrize(("fields", "message"), BAD, ids=[m.split("\\.")[-1][:18] for _, m in BAD])
def test_bad_constraints_raise_naming_the_field_before_anything_is_queued(llm: bastion.LLM, fields: dict,
                                                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        llm.generate(["fine", "also fine"], [SamplingParams(max_tokens=4),
                                             SamplingParams(max_tokens=4, structured_outputs=fields)], use_tqdm=False)
    assert not llm.engine.requests and llm.stats()["num_waiting"] == 0
    with pytest.raises(ValueError, match=message):  # the path AsyncLLM, the Gateway and the server take
        llm.processor.process_inputs("r", "hi", SamplingParams(structured_outputs=fields))
