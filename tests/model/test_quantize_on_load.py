"""``quantize_weights``: GGUF blocks made at load time for weights stored unquantized (HF directories,
F32 GGUFs), so small CPU steps take the block path and the one-call decoder."""

from __future__ import annotations

import bastion
import pytest
import torch
from bastion.model import load_model
from bastion.model.cpu_decoder import CpuDecoder
from bastion.model.quant_weights import quantized_weights
from bastion.model.quantize_on_load import quantize_model

from ..helpers.gguf_builder import write_llama_gguf
from ..helpers.tiny_models import save_with_tokenizer, tiny_model
from .model_helpers import PagedSequences

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random Llama as a Hugging Face directory (hidden 64, intermediate 96: rows of 32s)."""
    return save_with_tokenizer(tiny_model("llama", seed=4), tmp_path_factory.mktemp("tiny_hf"))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_every_projection_gets_blocks_close_to_its_weight(hf_dir, qtype: str) -> None:
    plain, quantized = load_model(hf_dir), load_model(hf_dir, quantize_weights=qtype)
    assert quantized_weights(plain.model) == []
    weights = quantized_weights(quantized.model)
    assert len(weights) == 4 * quantized.config.num_layers + 1  # every projection and the output head
    bound = 0.02 if qtype == "Q8_0" else 0.2  # measured 0.006 and 0.085 (8 vs 4 bits per weight)
    layer = quantized.model.layers[0]
    for linear in (layer.self_attn.qkv_proj, layer.mlp.down_proj):
        x = torch.randn(3, linear.in_features, generator=torch.Generator().manual_seed(1))
        exact = x @ linear.weight.T
        assert float((linear.quantized.matmul(x) - exact).norm() / exact.norm()) < bound


def test_quantized_hf_model_runs_the_one_call_decoder(hf_dir) -> None:
    """Through the engine: the decoder is built, and its logits stay near the fp32 modules'."""
    llm = bastion.LLM(model=str(hf_dir), quantize_weights="Q8_0", num_kv_blocks=64, block_size=4,
                      activation_bits=32)
    assert llm.engine.runner.cpu_decoder is not None
    assert bastion.LLM(model=str(hf_dir), num_kv_blocks=64).engine.runner.cpu_decoder is None
    loaded = load_model(hf_dir, quantize_weights="Q8_0")
    plain = PagedSequences(loaded.model, block_size=4, seed=2)
    fused = PagedSequences(loaded.model, block_size=4, seed=2)
    decoder = CpuDecoder.create(loaded.model, fused.kv_caches, max_tokens=8, threads=1, activation_bits=32)
    prompt = [5, 17, 9, 33, 2, 41, 7, 12, 19, 3]
    plain.step({0: prompt})
    fused.step({0: prompt})
    for token in (8, 30, 11):  # fp32 weights on one side, Q8_0 blocks on the other
        expected, got = plain.step({0: [token]}), fused.step({0: [token]}, forward=decoder.forward)
        assert float((got - expected).norm() / expected.norm()) < 0.02


def test_f32_gguf_gets_blocks_too(tmp_path) -> None:
    path = write_llama_gguf(tmp_path / "f32.gguf", tiny_model("qwen2", seed=5), arch="qwen2")
    assert quantized_weights(load_model(path).model) == []
    loaded = load_model(path, quantize_weights="Q8_0")
    assert len(quantized_weights(loaded.model)) == 4 * loaded.config.num_layers + 1


def test_unknown_type_is_refused(hf_dir) -> None:
    with pytest.raises(ValueError, match="quantize_weights"):
        quantize_model(load_model(hf_dir).model, "Q4_K")  # gguf-py cannot produce K-quants
    with pytest.raises(ValueError, match="quantize_weights"):
        bastion.LLM(model=str(hf_dir), quantize_weights="Q2_K")
