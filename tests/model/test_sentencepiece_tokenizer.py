"""SentencePiece (``tokenizer.ggml.model = llama``) vocabularies from GGUF, against transformers' reading of the same file."""

from __future__ import annotations

import pytest
from bastion.model import Tokenizer
from bastion.model.gguf_file import read_gguf_metadata

from ..helpers.gguf_builder import write_sentencepiece_gguf

TEXTS = ["hello world", "the world in a", "Hello, world!", "ünïcode ✓", "  two  spaces", "</s>hello"]


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory):
    return write_sentencepiece_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf")


@pytest.fixture(scope="module")
def ours(spm_gguf) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(read_gguf_metadata(spm_gguf))


@pytest.mark.parametrize("text", TEXTS)
def test_encode_and_decode_match_transformers(spm_gguf, ours, text) -> None:
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(spm_gguf.parent), gguf_file=spm_gguf.name)
    ids = ours.encode(text)
    assert ids == ref.encode(text)
    assert ids[0] == 1  # llama.cpp adds BOS to SentencePiece vocabs by default
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)


def test_unknown_characters_fall_back_to_bytes(ours) -> None:
    ids = ours.encode("✓", add_special_tokens=False)
    assert ids[-3:] == [3 + b for b in "✓".encode()]  # <0xE2> <0x9C> <0x93>
    assert ours.decode(ids) == "✓"
