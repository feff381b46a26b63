"""The grammar layer on SmolLM2's real tokenizer: checks naming the field, the compile cache, matchers,
forced tokens and the batched bitmask."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bastion.sampling import StructuredOutputsParams as S
from bastion.sampling.grammar import (
    BitmaskFiller,
    GrammarCompiler,
    GrammarMatcher,
    allowed_tokens,
    compiler_for,
    library,
)


@pytest.fixture(scope="module")
def tokenizer(smollm2_model):
    return smollm2_model.tokenizer


@pytest.fixture(scope="module")
def compiler(tokenizer) -> GrammarCompiler:
    return compiler_for(tokenizer, tokenizer.vocab_size)


def _matcher(compiler: GrammarCompiler, params: S) -> GrammarMatcher:
    return GrammarMatcher(compiler.compile(params).result(timeout=30).new_matcher(), params.kind)


def _mask(matcher: GrammarMatcher, words: int) -> np.ndarray:
    bitmask = np.zeros((1, words), dtype=np.int32)
    matcher.fill(bitmask, 0)
    return bitmask


@pytest.mark.parametrize(("params", "message"), [
    (S(json={"type": "strin"}), r"structured_outputs\.json: .*strin"),
    (S(json={"type": "string", "pattern": "(("}), r"structured_outputs\.json: .*regex"),
    (S(json={"not": {"type": "string"}}), r"structured_outputs\.json: .*Unimplemented"),
    (S(json={"$ref": "#/$defs/missing"}), r"structured_outputs\.json: .*missing"),
    (S(json={"type": "object", "minProperties": "x"}), r"structured_outputs\.json: .*minProperties"),
    (S(regex="[a-"), r"structured_outputs\.regex: .*unclosed"),
    (S(regex="a{3,1}"), r"structured_outputs\.regex: "),
    (S(grammar="start: foo"), r"structured_outputs\.grammar: .*foo"),
    (S(grammar="x: 'a'"), r"structured_outputs\.grammar: "),
], ids=["type", "pattern", "unimplemented", "ref", "keyword-value", "regex", "repetition", "lark-name", "lark-start"])
def test_rejected_constraints_name_the_field(compiler: GrammarCompiler, params: S, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compiler.check(params)
    with pytest.raises(ValueError, match=message.split(":")[0]):  # the compile fails the same way
        compiler.compile(params).result(timeout=30)


@pytest.mark.parametrize("params", [
    S(json={"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}}),
    S(json_object=True), S(regex=r"\d{3}"), S(choice=["red", "green"]),
    S(grammar='start: "a" b\nb: "b"+'), S(grammar='root ::= "yes" | "no"'),  # Lark, GBNF
])
def test_valid_constraints_pass_and_compile(compiler: GrammarCompiler, params: S) -> None:
    compiler.check(params)
    assert compiler.compile(params).result(timeout=30).key == (params.kind, params.spec)


def test_verdicts_and_compiles_are_cached(compiler: GrammarCompiler, monkeypatch: pytest.MonkeyPatch) -> None:
    params = S(json={"type": "object", "properties": {"cached": {"type": "boolean"}}})
    compiler.check(params)
    first = compiler.compile(params)
    first.result(timeout=30)
    calls = []
    monkeypatch.setattr(library, "check_grammar", lambda *a: calls.append(a))
    compiler.check(S(json={"type": "object", "properties": {"cached": {"type": "boolean"}}}))
    assert calls == []  # the verdict came from the cache
    assert compiler.compile(S(json=params.json)) is first
    assert compiler.cached(params)


def test_one_compiler_per_tokenizer(tokenizer) -> None:
    assert compiler_for(tokenizer, tokenizer.vocab_size) is compiler_for(tokenizer, tokenizer.vocab_size)
    assert compiler_for(tokenizer, tokenizer.vocab_size + 64) is not compiler_for(tokenizer, tokenizer.vocab_size)


def test_matcher_follows_a_valid_output_to_its_end(compiler: GrammarCompiler, tokenizer) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    matcher = _matcher(compiler, S(json=schema))
    text = json.dumps({"name": "Ada", "age": 36})
    for token in tokenizer.encode(text, add_special_tokens=False):
        assert token in allowed_tokens(_mask(matcher, compiler.mask_words), 0, tokenizer.vocab_size)
        assert matcher.accept(token)
    assert matcher.is_accepting and matcher.is_stopped  # "}" closes the object: nothing else may follow
    assert matcher.num_accepted == len(tokenizer.encode(text, add_special_tokens=False))


def test_rejected_token_puts_the_matcher_in_error(compiler: GrammarCompiler, tokenizer) -> None:
    matcher = _matcher(compiler, S(regex="[0-9]+"))
    assert not matcher.accept(tokenizer.encode("abc", add_special_tokens=False)[0])
    assert matcher.error is not None and matcher.is_stopped


def test_forced_tokens_are_the_schemas_fixed_text(compiler: GrammarCompiler, tokenizer) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"],
              "additionalProperties": False}
    matcher = _matcher(compiler, S(json=schema))
    forced = matcher.forced_tokens()
    # the last forced token ' "' is left to the model: a longer token (' "a', ...) may extend it
    assert tokenizer.decode(forced) == '{"id":'
    for token in forced:
        assert matcher.accept(token)
    assert tokenizer.decode(matcher.forced_tokens()) == ""
    choice = _matcher(compiler, S(choice=["only one"]))
    assert tokenizer.decode(choice.forced_tokens()).startswith("only")


def test_special_and_control_tokens_never_appear_inside_json_strings(compiler: GrammarCompiler, tokenizer) -> None:
    """The check that ruled xgrammar 0.2.9 out: it allows raw control characters (invalid JSON) in strings
    with minLength/maxLength. Neither those nor special tokens such as <|im_start|> may be sampled inside
    a string; end-of-sequence is allowed only where the JSON is complete."""
    vocab = tokenizer.vocab_size
    control = {t for t in range(vocab) if any(ord(c) < 0x20 for c in tokenizer.decode([t]))}
    special = {1, 3, 4}  # <|im_start|>, <repo_name>, <reponame>
    for string_schema in ({"type": "string"}, {"type": "string", "maxLength": 32}, {"type": "string", "minLength": 2}):
        schema = {"type": "object", "properties": {"a": string_schema}, "required": ["a"]}
        matcher = _matcher(compiler, S(json=schema))
        for token in tokenizer.encode('{"a": "x', add_special_tokens=False):
            assert matcher.accept(token)
        allowed = set(allowed_tokens(_mask(matcher, compiler.mask_words), 0, vocab))
        assert len(allowed) > 40000
        assert not allowed & control and not allowed & special and not allowed & set(tokenizer.eos_token_ids)


def test_batched_fill_equals_one_by_one(compiler: GrammarCompiler, tokenizer) -> None:
    specs = [S(json_object=True), S(regex="[a-z]{2,5}"), S(choice=["alpha", "beta"]),
             S(json={"type": "array", "items": {"type": "integer"}})]
    matchers = [_matcher(compiler, p) for p in specs * 3]
    for i, m in enumerate(matchers[4:]):  # advance some of them
        m.accept(m.forced_tokens()[0] if m.forced_tokens() else tokenizer.encode("ab", add_special_tokens=False)[i % 1])
    filler = BitmaskFiller(compiler.mask_words, 4, torch.device("cpu"), threads=2)
    batch = filler.fill(matchers, list(range(len(matchers))))  # more rows than allocated: the buffer grows
    assert batch.bitmask.shape == (len(matchers), compiler.mask_words) and batch.rows.tolist() == list(range(12))
    for r, m in enumerate(matchers):
        assert np.array_equal(batch.bitmask[r].numpy(), _mask(m, compiler.mask_words)[0])
    single = filler.fill(matchers[:1], [5])
    assert single.rows.tolist() == [5] and np.array_equal(single.bitmask[0].numpy(), _mask(matchers[0],
                                                                                               compiler.mask_words)[0])
