"""bastion's SmolLM2 against transformers' on the same GGUF: greedy tokens and logits, single and batched."""

from __future__ import annotations

import pytest
import torch
from bastion.model import load_model

from .model_helpers import PagedSequences, greedy_bastion, greedy_transformers

NUM_TOKENS = 32
LOGIT_ATOL = 2e-3  # fp32 both sides; measured max |diff| ~6e-5
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village by the sea,",
]


def _chat_prompt(tokenizer) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Name three primary colors."}])
    return tokenizer.encode(text)


@pytest.mark.parametrize("prompt_index", [*range(len(PROMPTS)), "chat"])
def test_greedy_matches_transformers(smollm2_model, hf_smollm2, prompt_index) -> None:
    tokenizer = smollm2_model.tokenizer
    prompt = _chat_prompt(tokenizer) if prompt_index == "chat" else tokenizer.encode(PROMPTS[prompt_index])
    ours, our_logits = greedy_bastion(smollm2_model.model, prompt, NUM_TOKENS)
    ref, ref_logits = greedy_transformers(hf_smollm2, prompt, NUM_TOKENS)
    assert ours == ref, f"diverged: {tokenizer.decode(ours)!r} vs {tokenizer.decode(ref)!r}"
    max_diff = max(float((a - b).abs().max()) for a, b in zip(our_logits, ref_logits, strict=True))
    print(f"prompt {prompt_index}: max |logit diff| over {NUM_TOKENS} steps = {max_diff:.2e}")
    assert max_diff < LOGIT_ATOL


def test_varlen_batch_equals_sequences_alone(smollm2_model) -> None:
    """A mixed batch (one prefill chunk + one decode token) gives each sequence the logits it gets alone."""
    tok = smollm2_model.tokenizer
    first, second = tok.encode(PROMPTS[0]), tok.encode(PROMPTS[2])
    alone = [PagedSequences(smollm2_model.model, seed=s) for s in (1, 2)]
    expected_first = alone[0].step({0: first})[-1]
    alone[1].step({0: second[:-1]})
    expected_second = alone[1].step({0: second[-1:]})[-1]

    batch = PagedSequences(smollm2_model.model, num_seqs=2, seed=3)
    batch.step({1: second[:-1]})
    logits = batch.step({0: first, 1: second[-1:]})
    torch.testing.assert_close(logits[len(first) - 1], expected_first, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[-1], expected_second, atol=1e-4, rtol=1e-4)


def test_compute_logits_shape_and_dtype(smollm2_model) -> None:
    hidden = torch.randn(3, smollm2_model.config.hidden_size)
    logits = smollm2_model.model.compute_logits(hidden)
    assert logits.shape == (3, smollm2_model.config.vocab_size)
    assert logits.dtype == torch.float32


def test_load_model_none_serves_smollm2(smollm2_model) -> None:
    default = load_model(None)  # the embedded default, from the shared conversion cache
    assert default.source == smollm2_model.source
    assert default.weights_sha256() == smollm2_model.weights_sha256()
    assert default.config.num_layers == 30 and default.config.tie_word_embeddings
