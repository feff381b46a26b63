"""IncrementalDetokenizer with the real SmolLM2 byte-level BPE tokenizer."""

from __future__ import annotations

import pytest
from bastion.engine.output_processor import PROMPT_CONTEXT_TOKENS, REPLACEMENT_CHAR, IncrementalDetokenizer

TEXTS = [
    "Hello world, this is plain ASCII.",
    "Emoji: 😀🎉 and a family 👨‍👩‍👧 in one line",
    "Accents: wörld, café, naïve — and dashes…",
    "日本語のテキストと中文混合",
    "Mixed 🚀 rocket, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters, and ✓ checks\n\tnew lines",
]


def _stream(detok: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    return [detok.add(token) for token in ids]


@pytest.mark.parametrize("text", TEXTS)
def test_stream_reassembles_exact_text_without_replacement_chars(smollm2_tokenizer, text: str) -> None:
    ids = smollm2_tokenizer.encode(text)
    pieces = _stream(IncrementalDetokenizer(smollm2_tokenizer.decode), ids)
    assert "".join(pieces) == text
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces)
    assert sum(1 for piece in pieces if piece) > 1  # streamed, not all at the end


def test_multibyte_character_is_held_until_complete(smollm2_tokenizer) -> None:
    ids = smollm2_tokenizer.encode("a😀")
    byte_tokens = [i for i in ids if REPLACEMENT_CHAR in smollm2_tokenizer.decode([i])]
    assert len(byte_tokens) >= 2, "the emoji must be split across tokens for this test to mean anything"
    pieces = _stream(IncrementalDetokenizer(smollm2_tokenizer.decode), ids)
    assert pieces[0] == "a"
    assert pieces[1:-1] == [""] * (len(ids) - 2)  # held while the decode ends in U+FFFD
    assert pieces[-1] == "😀"


def test_flush_releases_an_incomplete_character_as_the_full_decode_would(smollm2_tokenizer) -> None:
    ids = smollm2_tokenizer.encode("ok😀")[:-1]  # stop in the middle of the emoji's bytes
    detok = IncrementalDetokenizer(smollm2_tokenizer.decode)
    streamed = "".join(_stream(detok, ids))
    tail = detok.flush()
    assert streamed == "ok"
    assert tail.endswith(REPLACEMENT_CHAR)
    assert streamed + tail == smollm2_tokenizer.decode(ids)
    assert detok.flush() == ""  # nothing left the second time


def test_prompt_context_keeps_leading_space(smollm2_tokenizer) -> None:
    prompt = smollm2_tokenizer.encode("The answer is")
    output = smollm2_tokenizer.encode(" forty two")
    detok = IncrementalDetokenizer(smollm2_tokenizer.decode, prompt_token_ids=prompt)
    assert "".join(_stream(detok, output)) == " forty two"


def test_special_tokens_are_skipped(smollm2_tokenizer) -> None:
    eos = smollm2_tokenizer.eos_token_id
    ids = smollm2_tokenizer.encode("done")
    detok = IncrementalDetokenizer(smollm2_tokenizer.decode, skip_token_ids=smollm2_tokenizer.special_ids)
    assert "".join(_stream(detok, [*ids, eos])) == "done"
    keep = IncrementalDetokenizer(smollm2_tokenizer.decode)
    assert "".join(_stream(keep, [*ids, eos])) == "done<|im_end|>"


def test_never_redecodes_the_whole_output(smollm2_tokenizer) -> None:
    decoded_lengths: list[int] = []

    def counting_decode(ids: list[int]) -> str:
        decoded_lengths.append(len(ids))
        return smollm2_tokenizer.decode(ids)

    text = " ".join(["Streaming 😀 text costs the same per token however long it gets."] * 20)
    ids = smollm2_tokenizer.encode(text)
    prompt = smollm2_tokenizer.encode("Tell me something long:")
    detok = IncrementalDetokenizer(counting_decode, prompt_token_ids=prompt)
    assert "".join(_stream(detok, ids)) == text
    assert len(ids) > 200
    # the window holds the context plus the few tokens of one (possibly multi-token) character
    assert max(decoded_lengths) <= PROMPT_CONTEXT_TOKENS + 4


def test_rejects_non_callable_decode() -> None:
    with pytest.raises(TypeError, match="decode must be callable"):
        IncrementalDetokenizer("not a function")  # type: ignore[arg-type]
