"""Hugging Face directories: tiny random Llama 3 / Qwen2 / Mistral saved by transformers, our logits vs theirs."""

from __future__ import annotations

import pytest
import torch
from bastion.model import load_model

from ..helpers.tiny_models import CHAT_TEMPLATE, TINY_VOCAB, save_with_tokenizer, tiny_model
from .model_helpers import max_logit_diff_vs_transformers

IDS = torch.randint(3, TINY_VOCAB, (24,), generator=torch.Generator().manual_seed(0)).tolist()


@pytest.mark.parametrize("kind", ["llama3", "qwen2", "mistral"])
def test_logits_match_transformers(tmp_path, kind) -> None:
    reference = tiny_model(kind)
    loaded = load_model(save_with_tokenizer(reference, tmp_path))
    config = loaded.config
    assert config.tie_word_embeddings == (kind == "qwen2")
    assert config.attention_bias == (kind == "qwen2")
    assert config.sliding_window == (8 if kind == "mistral" else None)
    assert (config.rope_scaling or {}).get("rope_type") == ("llama3" if kind == "llama3" else None)
    assert max_logit_diff_vs_transformers(loaded.model, reference, IDS) < 1e-4


def test_tokenizer_and_template_from_directory(tmp_path) -> None:
    loaded = load_model(save_with_tokenizer(tiny_model("qwen2"), tmp_path))
    tok = loaded.tokenizer
    assert tok.encode("w5 w17 zzz", add_special_tokens=False) == [5, 17, 0]
    assert tok.eos_token_ids[0] == 2 and tok.bos_token_id == 1
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.apply_chat_template([{"role": "user", "content": "w3"}]) == "[user] w3\n"
    assert len(loaded.weights_sha256()) == 64
