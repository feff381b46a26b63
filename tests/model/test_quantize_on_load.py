"""``quantize_weights``: GGUF blocks made at load time for weights stored unquantized (HF directories,
F32 GGUFs), so small CPU steps take the block path and the one-call decoder."""

from __future__ import annotations

import bastion
import pytest
import torch
from bastion.engine.cpu_decoder import CpuDecoder
from bastion.model import load_model
from bastion.model.quant_linear import quantized_linears
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
    assert quantized_linears(plain.model) == []
    weights = quantized_linears(quantized.model)
    assert len(weights) == 4 * quantized.config.num_layers + 1  # every projection and the output head
    assert all(p.type_name == qtype for w in weights for p in w.parts)
    bound = 0.02 if qtype == "Q8_0" else 0.2  # measured 0.006 and 0.085 (8 vs 4 bits per weight)
    fp32, layer = plain.model.layers[0], quantized.model.layers[0]
    for exact_linear, linear in ((fp32.self_attn.qkv_proj, layer.self_attn.qkv_proj),
                                 (fp32.mlp.down_proj, layer.mlp.down_proj)):
        x = torch.randn(3, linear.in_features, generator=torch.Generator().manual_seed(1))
        exact = exact_linear(x)
        assert float((linear(x) - exact).norm() / exact.norm()) < bound


def test_quantized_hf_model_runs_the_one_call_decoder(hf_dir) -> None:
    """Through the engine: the decoder is built, and its logits stay near the fp32 modules'."""
    llm = bastion.LLM(model=str(hf_dir), quantize_weights="Q8_0", num_kv_blocks=64, block_size=4,
                      activation_bits=32)
    assert llm.engine.runner.cpu_decoder is not None
    assert bastion.LLM(model=str(hf_dir), num_kv_blocks=64).engine.runner.cpu_decoder is None
    loaded = load_model(hf_dir, quantize_weights="Q8_0")
    plain = PagedSequences(load_model(hf_dir).model, block_size=4, seed=2)
    fused = PagedSequences(loaded.model, block_size=4, seed=2)
    decoder = CpuDecoder.create(loaded.model, fused.kv_caches, max_tokens=8, threads=1, activation_bits=32)
    prompt = [5, 17, 9, 33, 2, 41, 7, 12, 19, 3]
    plain.step({0: prompt})
    fused.step({0: prompt})
    for token in (8, 30, 11):  # fp32 weights on one side, Q8_0 blocks on the other
        expected, got = plain.step({0: [token]}), fused.step({0: [token]}, forward=decoder.forward)
        assert float((got - expected).norm() / expected.norm()) < 0.02


def test_f32_gguf_gets_blocks_too(tmp_path) -> None:
    """An F32 file runs its linears on the file's floats (no block kernel); quantize_weights gives them blocks."""
    path = write_llama_gguf(tmp_path / "f32.gguf", tiny_model("qwen2", seed=5), arch="qwen2")
    plain = quantized_linears(load_model(path).model)
    assert plain and all(p.type_name == "F32" for w in plain for p in w.parts) and not any(w.max_tokens for w in plain)
    loaded = load_model(path, quantize_weights="Q8_0")
    weights = quantized_linears(loaded.model)
    assert len(weights) == 4 * loaded.config.num_layers + 1
    assert all(p.type_name == "Q8_0" for w in weights for p in w.parts)


def test_unknown_type_is_refused(hf_dir) -> None:
    with pytest.raises(ValueError, match="quantize_weights"):
        quantize_model(load_model(hf_dir).model, "Q4_K")  # gguf-py cannot produce K-quants
    with pytest.raises(ValueError, match="quantize_weights"):
        bastion.LLM(model=str(hf_dir), quantize_weights="Q2_K")
