"""bastion's GGUF tokenizer and chat template against transformers' for SmolLM2, plus round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from bastion.model import Tokenizer

TEXTS = [
    "Hello world! 123  é",
    "  leading spaces\n\n\ttabs 12345 don't I'M",
    "<|im_start|>user\nHi<|im_end|>\n",
    "日本語のテキスト 🚀 emoji",
    "x = 3.14159e10; // $%^&*()",
    "",
]
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
]


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)


@pytest.fixture(scope="module")
def tokenizer(smollm2_model) -> Tokenizer:
    return smollm2_model.tokenizer


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers(tokenizer, hf_tokenizer, text) -> None:
    assert tokenizer.encode(text) == hf_tokenizer.encode(text)


@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trips(tokenizer, text) -> None:
    assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=False) == text


def test_special_tokens(tokenizer) -> None:
    assert tokenizer.encode("<|im_end|>") == [2]
    assert tokenizer.eos_token_ids == (2,)
    assert tokenizer.bos_token_id == 1
    assert tokenizer.vocab_size == 49152
    assert tokenizer.decode(tokenizer.encode("a<|im_end|>b")) == "ab"  # specials skipped by default


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(tokenizer, hf_tokenizer, conversation, add_generation_prompt) -> None:
    ours = tokenizer.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt)
    ref = hf_tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours == ref


@pytest.mark.parametrize("bad", ["hello", [{"content": "no role"}], ["not a dict"], [{"role": "user"}]])
def test_bad_messages_are_named(tokenizer, bad) -> None:
    with pytest.raises(ValueError, match="messages"):
        tokenizer.apply_chat_template(bad)


def test_save_and_load_round_trip(tokenizer, tmp_path) -> None:
    tokenizer.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.encode(TEXTS[1]) == tokenizer.encode(TEXTS[1])
    assert again.eos_token_ids == tokenizer.eos_token_ids
    assert again.apply_chat_template(CONVERSATIONS[0]) == tokenizer.apply_chat_template(CONVERSATIONS[0])
