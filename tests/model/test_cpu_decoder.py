"""The one-call C++ decoder (``CpuDecoder``) against the module-by-module model on the real SmolLM2."""

from __future__ import annotations

import pytest
import torch
from bastion.engine.cpu_decoder import CpuDecoder
from bastion.model import load_model

from ..helpers.gguf_builder import write_llama_gguf
from ..helpers.tiny_models import tiny_model
from .model_helpers import PagedSequences

gguf = pytest.importorskip("gguf")

PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea, there lived"]


def _twin_runs(loaded, bits: int, prompts: tuple[list[int], list[int]] | None = None,
               ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[torch.Tensor, ...]]]:
    """One schedule through the modules and through the decoder; returns (logit pairs, KV cache pairs).

    Prefills (over 8 tokens) run through the modules on both sides, as in the engine. The small steps
    cover batched decodes, a 5-token chunk beside a decode, and decodes crossing block edges (block 4).
    """
    first, second = prompts or [loaded.tokenizer.encode(p) for p in PROMPTS]
    plain = PagedSequences(loaded.model, num_seqs=2, block_size=4, seed=5)
    fused = PagedSequences(loaded.model, num_seqs=2, block_size=4, seed=5)  # same permuted block tables
    decoder = CpuDecoder.create(loaded.model, fused.kv_caches, max_tokens=8, threads=1, activation_bits=bits)
    assert decoder is not None
    plain.step({0: first})
    fused.step({0: first})
    schedule = [{0: [11]}, {0: [12], 1: second[:5]}, {0: [13], 1: second[5:6]}]
    schedule += [{0: [20 + i], 1: [40 + i]} for i in range(6)]
    logits = [(plain.step(chunks), fused.step(chunks, forward=decoder.forward)) for chunks in schedule]
    return logits, list(zip(plain.kv_caches, fused.kv_caches, strict=True))


@pytest.mark.parametrize(("bits", "atol"), [(32, 2e-4), (16, 2e-2)])
def test_decoder_equals_modules(smollm2_model, bits: int, atol: float) -> None:
    """fp32 activations: the same kernels in the same order, so logits and the written K/V agree to
    rounding. int16 activations: logits within 2e-2 (measured max 8e-3 on logits of magnitude ~20)."""
    logits, caches = _twin_runs(smollm2_model, bits)
    for expected, got in logits:
        torch.testing.assert_close(got, expected, atol=atol, rtol=1e-4)
        assert torch.equal(got.argmax(-1), expected.argmax(-1))
    for (k1, v1), (k2, v2) in caches:
        torch.testing.assert_close(k2, k1, atol=atol / 2, rtol=1e-4)
        torch.testing.assert_close(v2, v1, atol=atol / 2, rtol=1e-4)


@pytest.mark.parametrize(("kind", "arch", "qtype"), [("qwen2", "qwen2", "Q8_0"), ("llama3", "llama", "Q4_1")])
def test_decoder_serves_other_llama_family_models(tmp_path, kind: str, arch: str, qtype: str) -> None:
    """Qwen2 (QKV bias, tied embeddings, Q8_0) and Llama 3 (rope scaling, q/k permuted in the file,
    Q4_1): tiny random GGUFs through the decoder equal the modules."""
    path = write_llama_gguf(tmp_path / "tiny.gguf", tiny_model(kind, seed=3), arch=arch,
                            qtype=gguf.GGMLQuantizationType[qtype])
    loaded = load_model(path)
    ids = torch.randint(2, 300, (20,), generator=torch.Generator().manual_seed(1)).tolist()
    logits, caches = _twin_runs(loaded, 32, prompts=(ids[:11], ids[11:]))
    for expected, got in logits:
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    for (k1, v1), (k2, v2) in caches:
        torch.testing.assert_close(k2, k1, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(v2, v1, atol=1e-5, rtol=1e-4)


def _q4_k_m_like(name: str) -> gguf.GGMLQuantizationType:
    """llama.cpp's Q4_K_M mix: Q4_K, with attn_v and the first layer's ffn_down in Q6_K, embeddings Q8_0."""
    T = gguf.GGMLQuantizationType
    if "embed_tokens" in name or "lm_head" in name:
        return T.Q8_0
    return T.Q6_K if ".v_proj." in name or name.startswith("model.layers.0.mlp.down_proj") else T.Q4_K


@pytest.mark.parametrize("bits", [32, 16])
def test_decoder_serves_a_q4_k_m_like_file(tmp_path, bits: int) -> None:
    """K-quants with mixed types inside the fused QKV (q, k Q4_K + v Q6_K): one call per step equals the
    modules, exactly with fp32 activations and within int16 rounding otherwise."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    reference = LlamaForCausalLM(LlamaConfig(vocab_size=320, hidden_size=256, intermediate_size=512,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=256, tie_word_embeddings=False)).eval()
    loaded = load_model(write_llama_gguf(tmp_path / "q4km.gguf", reference, qtype_of=_q4_k_m_like))
    qkv = loaded.model.layers[0].self_attn.qkv_proj
    assert [(p.ggml_type, p.rows) for p in qkv.parts] == [(12, 256), (12, 128), (14, 128)]  # Q4_K q, k; Q6_K v
    ids = torch.randint(2, 300, (20,), generator=torch.Generator().manual_seed(2)).tolist()
    logits, caches = _twin_runs(loaded, bits, prompts=(ids[:11], ids[11:]))
    worst = max(float((got - expected).norm() / expected.norm()) for expected, got in logits)
    print(f"activation_bits={bits}: worst relative logit error {worst:.1e}")
    assert worst < (2e-5 if bits == 32 else 1e-2)  # measured 1.5e-6 and 2.1e-3 (random weights amplify)


def test_decoder_rejects_steps_it_does_not_serve(smollm2_model) -> None:
    seqs = PagedSequences(smollm2_model.model, block_size=4)
    decoder = CpuDecoder.create(smollm2_model.model, seqs.kv_caches, max_tokens=2, threads=1, activation_bits=32)
    assert decoder is not None and decoder.applies(2) and not decoder.applies(3) and not decoder.applies(0)
    with pytest.raises(ValueError, match="1..2 tokens"):
        seqs.step({0: [1, 2, 3]}, forward=decoder.forward)


def test_decoder_declines_models_it_cannot_run(smollm2_model) -> None:
    model = smollm2_model.model
    caches = model.make_kv_caches(4, 4)
    assert CpuDecoder.create(model, caches, max_tokens=0, threads=1, activation_bits=32) is None
    model.set_ops_backends({"paged_attention": "torch"})  # an explicitly chosen backend must not be bypassed
    try:
        assert CpuDecoder.create(model, caches, max_tokens=8, threads=1, activation_bits=32) is None
    finally:
        model.set_ops_backends({})
    attn = model.layers[0].self_attn
    blocks = attn.o_proj
    attn.o_proj = torch.nn.Linear(blocks.in_features, blocks.out_features, bias=False)  # no GGUF blocks to point at
    try:
        assert CpuDecoder.create(model, caches, max_tokens=8, threads=1, activation_bits=32) is None
    finally:
        attn.o_proj = blocks
    assert CpuDecoder.create(model, caches, max_tokens=8, threads=1, activation_bits=32) is not None


def test_program_rejects_inconsistent_layers(smollm2_model) -> None:
    """The C++ program checks every layer it is given: parts that do not add up, a K that does not fit
    the type's blocks, an unknown type, a bias outside QKV; the message names the projection."""
    from bastion import _core

    model, cfg = smollm2_model.model, smollm2_model.config
    caches = model.make_kv_caches(4, 4)
    program = _core.cpu.DecoderProgram(
        hidden=cfg.hidden_size, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        intermediate=cfg.intermediate_size, rotary_half=cfg.head_dim // 2, block_size=4, num_blocks=4,
        eps=cfg.rms_norm_eps, scale=1.0, sliding_window=0, final_norm=model.norm.weight.data_ptr(), activation_bits=16)
    layer = model.layers[0]
    norms = (layer.input_layernorm.weight.data_ptr(), layer.post_attention_layernorm.weight.data_ptr())

    def linear(module, rows_delta: int = 0, ggml_type: int | None = None, bias: int = 0):  # noqa: ANN001, ANN202
        parts = [(p.blocks.data_ptr(), p.ggml_type if ggml_type is None else ggml_type, p.rows + rows_delta)
                 for p in module.parts]
        return parts, module.in_features, bias

    attn, mlp = layer.self_attn, layer.mlp
    good = [linear(attn.qkv_proj), linear(attn.o_proj), linear(mlp.gate_up_proj), linear(mlp.down_proj)]
    kv = (caches[0][0].data_ptr(), caches[0][1].data_ptr())
    program.add_layer(*norms, *good, *kv)
    assert program.num_layers == 1
    for index, bad, match in [(0, linear(attn.qkv_proj, rows_delta=-1), "qkv"),
                              (1, linear(attn.o_proj, ggml_type=12), "o must be"),  # Q4_K: K 576 is not 256k
                              (2, linear(mlp.gate_up_proj, ggml_type=99), "gate_up"),
                              (3, linear(mlp.down_proj, bias=model.norm.weight.data_ptr()), "bias")]:
        layers = list(good)
        layers[index] = bad
        with pytest.raises(ValueError, match=match):
            program.add_layer(*norms, *layers, *kv)
    assert program.num_layers == 1
