"""Read a GGUF file: metadata, ``ModelConfig`` and dequantized weights under Hugging Face names.

llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` of llama-arch models so that its
GPT-J-style (interleaved) rotary gives the same result as HF's neox-style one; we undo that
permutation so the torch model can use the neox rotary for every architecture.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from bastion.errors import ModelLoadError
from bastion.model.config import ModelConfig

# Quant types we claim (each covered by a test); gguf.quants dequantizes them.
SUPPORTED_QUANT_TYPES: tuple[str, ...] = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)
# GGUF architectures we run; llama.cpp writes Mistral models as "llama".
GGUF_ARCHITECTURES: tuple[str, ...] = ("llama", "qwen2")
# architectures whose q/k rows llama.cpp's converter permuted
PERMUTED_QK_ARCHITECTURES = ("llama",)

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
ROPE_FREQS = "rope_freqs.weight"  # llama3-style rope scaling, stored as per-frequency divisors


@dataclass
class GGUFContents:
    """What a GGUF file holds, converted to our conventions."""

    metadata: dict[str, Any]
    config: ModelConfig
    tensors: dict[str, np.ndarray]  # HF names, float32


def hf_tensor_name(gguf_name: str) -> str:
    """Map a llama.cpp tensor name to its Hugging Face name; ModelLoadError if unknown."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise ModelLoadError(f"unexpected tensor {gguf_name!r} for a Llama-family model")
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}"


def unpermute_qk(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation (per head: interleaved pairs -> two halves)."""
    rows = weight.shape[0]
    half = rows // num_heads // 2
    return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def open_reader(path: Path, mode: Literal["r", "r+", "c"] = "r") -> Any:
    """A ``gguf.GGUFReader`` of ``path`` (``mode`` "c": a private copy-on-write map); ModelLoadError for a
    missing, unreadable or truncated file."""
    import gguf

    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        reader = gguf.GGUFReader(path, mode)
    except Exception as exc:  # the reader raises ValueError/IndexError/struct errors on bad bytes
        raise ModelLoadError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
    size = os.path.getsize(path)
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ModelLoadError(f"{path}: file is truncated (tensor {tensor.name!r} ends past the end of the file)")
    return reader


def read_metadata(reader: Any) -> dict[str, Any]:
    """All key/value fields of a GGUF reader as plain Python values (strings, numbers, lists)."""
    out: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = fld.contents()
        out[key] = value
    return out


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the metadata of a GGUF file (no weights read); ModelLoadError for a missing or bad file."""
    return read_metadata(open_reader(Path(path)))


def config_from_metadata(meta: dict[str, Any], tensor_names: set[str], path: Path) -> ModelConfig:
    """Build the ``ModelConfig`` from GGUF metadata (and which tensors exist: tied output, QKV bias)."""
    arch = meta.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise ModelLoadError(
            f"{path}: unsupported architecture {arch!r}; supported GGUF architectures: {', '.join(GGUF_ARCHITECTURES)}"
        )

    def key(name: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{name}", default)
        if value is None:
            raise ModelLoadError(f"{path}: GGUF metadata lacks {arch}.{name}")
        return value

    hidden, heads = int(key("embedding_length")), int(key("attention.head_count"))
    head_dim = int(meta.get(f"{arch}.attention.key_length") or hidden // heads)
    rope_scaling = _rope_scaling(meta, arch)
    name = str(meta.get("general.name", ""))
    window = meta.get(f"{arch}.attention.sliding_window")
    return ModelConfig(
        architecture="mistral" if arch == "llama" and "mistral" in name.lower() else arch,
        vocab_size=int(meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))),
        hidden_size=hidden,
        intermediate_size=int(key("feed_forward_length")),
        num_layers=int(key("block_count")),
        num_heads=heads,
        num_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv") or heads),
        head_dim=head_dim,
        max_position_embeddings=int(key("context_length")),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=rope_scaling,
        rms_norm_eps=float(key("attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        sliding_window=int(window) if window else None,
        name=name or path.stem,
    )


def _rope_scaling(meta: dict[str, Any], arch: str) -> dict[str, Any] | None:
    kind = meta.get(f"{arch}.rope.scaling.type")
    factor = meta.get(f"{arch}.rope.scaling.factor")
    if kind in (None, "none") or not factor:
        return None
    if kind != "linear":
        raise ModelLoadError(f"unsupported GGUF rope scaling type {kind!r} (supported: linear, llama3 rope_freqs)")
    return {"rope_type": "linear", "factor": float(factor)}


def freq_factors_scaling(rope_freqs: np.ndarray) -> dict[str, Any]:
    """``ModelConfig.rope_scaling`` for llama.cpp's ``rope_freqs`` tensor (llama3-style scaling)."""
    return {"rope_type": "freq_factors", "factors": rope_freqs.reshape(-1).tolist()}


def dequantize_tensor(tensor: Any) -> np.ndarray:
    """Dequantize one GGUF tensor to float32 with its numpy (row-major) shape."""
    from gguf.quants import dequantize

    qtype = tensor.tensor_type.name
    if qtype not in SUPPORTED_QUANT_TYPES:
        raise ModelLoadError(
            f"tensor {tensor.name!r} has unsupported GGUF type {qtype}; supported: {', '.join(SUPPORTED_QUANT_TYPES)}"
        )
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists dims fastest-first
    array = np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type).reshape(shape), dtype=np.float32)
    # F32 tensors come back as views of the read-only file map; torch needs memory it may own
    return array if array.flags.writeable else array.copy()


def read_gguf(path: str | os.PathLike[str]) -> GGUFContents:
    """Read a GGUF model file; ModelLoadError for a missing/corrupt/truncated file or unsupported model."""
    path = Path(path)
    reader = open_reader(path)
    meta = read_metadata(reader)
    names = {t.name for t in reader.tensors}
    config = config_from_metadata(meta, names, path)
    permuted = meta["general.architecture"] in PERMUTED_QK_ARCHITECTURES
    tensors: dict[str, np.ndarray] = {}
    for tensor in tqdm(reader.tensors, desc=f"dequantizing {path.name}", unit="tensor", leave=False):
        array = dequantize_tensor(tensor)
        if tensor.name == ROPE_FREQS:
            config.rope_scaling = freq_factors_scaling(array)
            continue
        hf_name = hf_tensor_name(tensor.name)
        if permuted and ".q_proj." in hf_name:
            array = unpermute_qk(array, config.num_heads)
        elif permuted and ".k_proj." in hf_name:
            array = unpermute_qk(array, config.num_kv_heads)
        tensors[hf_name] = array
    return GGUFContents(metadata=meta, config=config, tensors=tensors)
