"""Write small GGUF files for tests, the way llama.cpp's converter lays them out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import torch

_HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER_PARTS = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's converter permutation of q/k rows (written independently of bastion's inverse)."""
    return weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape
    )


def gguf_name(hf_name: str) -> str:
    """llama.cpp's tensor name for an HF Llama tensor name."""
    if hf_name in _HF_TO_GGUF:
        return _HF_TO_GGUF[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    part, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_LAYER_PARTS[part]}.{kind}"


def byte_level_vocab() -> list[str]:
    """The 256 byte-level BPE symbols (GPT-2's byte-to-unicode table) as a vocab."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


# byte ranges of each K-quant block's fp16 scales
K_QUANT_SCALE_BYTES = {
    gguf.GGMLQuantizationType.Q2_K: ((80, 82), (82, 84)), gguf.GGMLQuantizationType.Q3_K: ((108, 110),),
    gguf.GGMLQuantizationType.Q4_K: ((0, 2), (2, 4)), gguf.GGMLQuantizationType.Q5_K: ((0, 2), (2, 4)),
    gguf.GGMLQuantizationType.Q6_K: ((208, 210),),
}


def random_blocks(qtype: gguf.GGMLQuantizationType, rows: int, cols: int, seed: int,
                  scales: tuple[float, float] = (1e-4, 1e-3)) -> np.ndarray:
    """Random blocks of a type gguf-py cannot quantize to (the K-quants): random bytes with fp16 scales
    drawn from ``scales`` (every other byte pattern is a valid block), ``[rows, bytes per row]`` uint8."""
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows * cols // block_values, block_bytes), dtype=np.uint8)
    for lo, hi in K_QUANT_SCALE_BYTES[qtype]:
        raw[:, lo:hi] = rng.uniform(*scales, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


def add_llama_hyperparameters(writer: gguf.GGUFWriter, *, name: str, layers: int, context: int, hidden: int,
                              intermediate: int, heads: int, kv_heads: int, rope_theta: float = 10000.0,
                              rms_eps: float = 1e-5) -> None:
    """The metadata a Llama-family GGUF's shape lives in, under llama.cpp's keys."""
    writer.add_name(name)
    writer.add_block_count(layers)
    writer.add_context_length(context)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(intermediate)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(rms_eps)


def add_byte_level_tokenizer(writer: gguf.GGUFWriter, vocab_size: int, pre: str | None = None) -> None:
    """A GPT-2 byte-level BPE tokenizer of ``vocab_size`` tokens: <s>, </s>, the 256 byte symbols (byte b is
    token b + 2), one merge (llama.cpp refuses a BPE vocabulary without any) and fillers; a chat template."""
    tokens = ["<s>", "</s>", *byte_level_vocab(), "\u0120t"]
    tokens += [f"<extra_{i}>" for i in range(vocab_size - len(tokens))]
    writer.add_tokenizer_model("gpt2")
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3] + [1] * (len(tokens) - 2))
    writer.add_token_merges(["\u0120 t"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_chat_template("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")


def write_llama_gguf(path: Path, hf_model: torch.nn.Module, *, arch: str = "llama",
                     qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32,
                     rope_freqs: np.ndarray | None = None,
                     qtype_of: Callable[[str], gguf.GGMLQuantizationType] | None = None) -> Path:
    """Convert a small transformers Llama/Qwen2 model to a GGUF file (permuting q/k for llama arch).

    ``rope_freqs`` are llama.cpp's per-frequency divisors, its way of storing llama3 rope scaling.
    ``qtype_of(hf_name)`` picks each matrix's type instead of ``qtype`` (mixed files like Q4_K_M);
    K-quant matrices get ``random_blocks`` instead of the model's weights, so compare such a file
    with itself (loaded), not with ``hf_model``.
    """
    cfg = hf_model.config
    writer = gguf.GGUFWriter(str(path), arch)
    add_llama_hyperparameters(writer, name="tiny-test", layers=cfg.num_hidden_layers,
                              context=cfg.max_position_embeddings, hidden=cfg.hidden_size,
                              intermediate=cfg.intermediate_size, heads=cfg.num_attention_heads,
                              kv_heads=cfg.num_key_value_heads, rope_theta=float(cfg.rope_parameters["rope_theta"]),
                              rms_eps=cfg.rms_norm_eps)
    add_byte_level_tokenizer(writer, cfg.vocab_size)
    for name, tensor in hf_model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        array = tensor.float().numpy()
        if arch == "llama" and ".q_proj." in name:
            array = llama_cpp_permute(array, cfg.num_attention_heads)
        elif arch == "llama" and ".k_proj." in name:
            array = llama_cpp_permute(array, cfg.num_key_value_heads)
        is_matrix = array.ndim == 2
        kind = (qtype_of(name) if qtype_of else qtype) if is_matrix else gguf.GGMLQuantizationType.F32
        if kind in K_QUANT_SCALE_BYTES:
            data = random_blocks(kind, *array.shape, seed=len(name) * 7919 + array.size)
        else:
            data = gguf.quants.quantize(array, kind)
        writer.add_tensor(gguf_name(name), data, raw_dtype=kind)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path



SPM_PIECES = ["▁t", "he", "▁the", "▁a", "in", "▁in", "er", "▁w", "or", "ld", "▁wor", "▁world", "▁hel", "lo", "el"]
SPM_CHARS = list("▁abcdefghijklmnopqrstuvwxyzH,!")


def write_sentencepiece_gguf(path: Path) -> Path:
    """A GGUF holding only a small SentencePiece (``llama``) vocab: control/unknown tokens, the 256 byte
    tokens, multi-character pieces scored best-first, then single characters."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + SPM_PIECES + SPM_CHARS
    scores = [0.0] * 259 + [-float(i) for i in range(len(SPM_PIECES))] + [-100.0 - i for i in range(len(SPM_CHARS))]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * (len(SPM_PIECES) + len(SPM_CHARS)))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
