"""A GGUF file as a ``LlamaForCausalLM`` whose weights stay in the file: memory-mapped, never dequantized.

Every linear becomes a ``QuantizedLinear`` over views of the mapped file (fused QKV and gate/up as
parts, one per source tensor, so nothing is concatenated), the token table a ``QuantizedEmbedding``,
and a tied output head shares the table's blocks. Only the norms, biases and the q/k rows of
llama-arch files (whose rows llama.cpp's converter permuted, see ``gguf_file.unpermute_qk``) are
copied. The map is private copy-on-write, so the file is never written and the page cache shares
the bytes with every other process reading the same file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from bastion.errors import ModelLoadError
from bastion.model.config import ModelConfig
from bastion.model.gguf_file import (
    PERMUTED_QK_ARCHITECTURES,
    ROPE_FREQS,
    config_from_metadata,
    freq_factors_scaling,
    hf_tensor_name,
    unpermute_qk,
)
from bastion.model.gguf_header import GGUFHeader
from bastion.model.llama import LlamaDecoderLayer, LlamaForCausalLM
from bastion.model.quant_linear import (
    FLOAT_TYPES,
    KERNEL_TYPES,
    QuantizedEmbedding,
    QuantizedLinear,
    QuantPart,
)
from bastion.model.rope import build_cos_sin_cache

# GGUF types the block model reads; any other (IQ*, TQ*, ...) is refused at load, naming the tensor
BLOCK_MODEL_TYPES: tuple[str, ...] = (*FLOAT_TYPES, *KERNEL_TYPES)


def open_gguf(path: Path) -> GGUFHeader:
    """The header of ``path`` over a private copy-on-write map of it (``gguf_header``); ModelLoadError
    for a missing, unreadable or truncated file, or one holding a tensor type bastion does not run."""
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        reader = GGUFHeader(path)
    except (ValueError, struct.error, UnicodeDecodeError, OverflowError) as exc:
        raise ModelLoadError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
    for tensor in reader.tensors:
        if tensor.tensor_type.name not in BLOCK_MODEL_TYPES:
            raise ModelLoadError(f"{path}: tensor {tensor.name!r} has GGUF type {tensor.tensor_type.name}, which "
                                 f"bastion does not run; supported: {', '.join(BLOCK_MODEL_TYPES)}")
    return reader


def weight_bytes(reader: GGUFHeader) -> int:
    """Bytes of every tensor in the file: what the block model keeps in memory (mapped)."""
    return sum(int(t.n_bytes) for t in reader.tensors)


def read_block_config(reader: GGUFHeader, path: Path) -> tuple[dict[str, Any], ModelConfig]:
    """The file's metadata and ``ModelConfig`` (llama3 rope scaling read from ``rope_freqs``)."""
    meta = dict(reader.fields)
    tensors = {t.name: t for t in reader.tensors}
    config = config_from_metadata(meta, set(tensors), path)
    if ROPE_FREQS in tensors:
        config.rope_scaling = freq_factors_scaling(np.asarray(tensors[ROPE_FREQS].data, dtype=np.float32))
    return meta, config


class _Tensors:
    """The file's tensors by Hugging Face name, as ``QuantPart`` views (q/k rows unpermuted into copies)."""

    def __init__(self, reader: GGUFHeader, config: ModelConfig) -> None:
        self.by_name = {hf_tensor_name(t.name): t for t in reader.tensors if t.name != ROPE_FREQS}
        self.config = config
        self.permuted = reader.fields["general.architecture"] in PERMUTED_QK_ARCHITECTURES

    def get(self, name: str) -> Any:
        tensor = self.by_name.get(name)
        if tensor is None:
            raise ModelLoadError(f"GGUF file lacks tensor {name!r}")
        return tensor

    def part(self, name: str) -> QuantPart:
        tensor = self.get(name)
        data = np.asarray(tensor.data)  # [rows, bytes per row] (quantized) or [rows, cols] (float): a map view
        if self.permuted and ".q_proj." in name:
            data = unpermute_qk(data, self.config.num_heads)
        elif self.permuted and ".k_proj." in name:
            data = unpermute_qk(data, self.config.num_kv_heads)
        qtype = tensor.tensor_type.name
        if qtype != "F32":
            data = data.view(np.uint8)  # F16/BF16 rows as bytes: the kernels read them by type
        return QuantPart(torch.from_numpy(data), (KERNEL_TYPES | FLOAT_TYPES)[qtype])

    def vector(self, name: str) -> torch.Tensor:
        """A small float32 tensor (norm weight, bias), copied out of the map."""
        tensor = self.get(name)
        return torch.from_numpy(np.array(tensor.data, dtype=np.float32).reshape(-1))


def build_block_model(reader: GGUFHeader, config: ModelConfig) -> LlamaForCausalLM:
    """The fp32 CPU model of ``config`` over the file's blocks (see module doc)."""
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    src = _Tensors(reader, config)
    hidden, inter = config.hidden_size, config.intermediate_size
    q_size, kv_size = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim

    def linear(rows: int, cols: int, names: tuple[str, ...], bias: tuple[str, ...] = ()) -> QuantizedLinear:
        b = torch.cat([src.vector(n) for n in bias]) if bias else None
        return QuantizedLinear(cols, rows, tuple(src.part(n) for n in names), b)

    def norm(name: str) -> nn.Parameter:
        return nn.Parameter(src.vector(name), requires_grad=False)

    for i, layer in enumerate(cast(Iterable[LlamaDecoderLayer], model.layers)):  # what __init__ builds
        p = f"model.layers.{i}."
        attn, mlp = layer.self_attn, layer.mlp
        qkv = tuple(f"{p}self_attn.{x}_proj.weight" for x in "qkv")
        bias = tuple(f"{p}self_attn.{x}_proj.bias" for x in "qkv") if config.attention_bias else ()
        attn.qkv_proj = linear(q_size + 2 * kv_size, hidden, qkv, bias)
        attn.o_proj = linear(hidden, q_size, (f"{p}self_attn.o_proj.weight",))
        mlp.gate_up_proj = linear(2 * inter, hidden, (f"{p}mlp.gate_proj.weight", f"{p}mlp.up_proj.weight"))
        mlp.down_proj = linear(hidden, inter, (f"{p}mlp.down_proj.weight",))
        layer.input_layernorm.weight = norm(f"{p}input_layernorm.weight")
        layer.post_attention_layernorm.weight = norm(f"{p}post_attention_layernorm.weight")
    table = src.part("model.embed_tokens.weight")
    model.embed_tokens = QuantizedEmbedding(table, hidden)
    head = table if config.tie_word_embeddings else src.part("lm_head.weight")
    model.lm_head = QuantizedLinear(hidden, config.vocab_size, (head,))
    model.norm.weight = norm("model.norm.weight")
    model.cos_sin_cache = build_cos_sin_cache(config.max_position_embeddings, config.head_dim, config.rope_theta,
                                              config.rope_scaling, dtype=torch.float32, device="cpu")
    return model.eval().requires_grad_(False)
