"""Keep the GGUF's original Q4_1/Q8_0 blocks next to the fp32 weights for small-batch decode.

Decode with a few tokens per step is memory-bound: reading ~4.5-bit blocks instead of 32-bit floats
is what makes it fast (``bastion.ops.cpu_backend.quant_matmul``). Prefill and big batches still
use the fp32 weights with torch GEMM, which is compute-bound and faster there. The blocks get the
same q/k row unpermutation as ``gguf_file`` (rows are independent, so whole rows of blocks move)
and the same fusion order as ``fuse`` (QKV, gate/up concatenated along the output rows).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bastion.model.config import ModelConfig
from bastion.model.fuse import _LAYER_GROUPS
from bastion.model.gguf_file import _PERMUTED_QK_ARCHITECTURES, _open_reader, hf_tensor_name, unpermute_qk
from bastion.model.safetensors_mmap import load_mmap, save

# ggml type numbers the C++ kernel reads; every other type keeps the fp32 path only
KERNEL_TYPES: dict[str, int] = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q4_K": 12, "Q6_K": 14}
# Largest step (tokens) that uses the blocks when the thread count is unknown (see block_path_max_tokens).
DEFAULT_MAX_TOKENS = 8
_LINEAR_GROUPS = {k: v for k, v in _LAYER_GROUPS.items() if "norm" not in k}
# beside the converted fp32 weights; keys are "<param name>:<part index>:<ggml type name>"
_CACHE_FILE = "quantized-parts.safetensors"


@dataclass(frozen=True)
class QuantPart:
    """Consecutive output rows of a weight as GGUF blocks of one type (``blocks`` uint8 ``[rows, bytes]``)."""

    blocks: torch.Tensor
    ggml_type: int

    @property
    def rows(self) -> int:
        """Output rows (features) of this part."""
        return self.blocks.shape[0]


@dataclass
class QuantizedWeight:
    """A linear weight ``[out_features, K]`` as GGUF blocks: one part per run of source tensors of one
    type (a fused QKV of a Q4_K_M file: q and k in Q4_K, v in Q6_K)."""

    parts: tuple[QuantPart, ...]
    max_tokens: int = DEFAULT_MAX_TOKENS
    threads: int | None = None  # None: cpu_backend.num_threads(), i.e. the engine's num_threads
    activation_bits: int = 32  # 16: round x to int16 per 32 values (see cpu_backend.quant_matmul)

    @property
    def out_features(self) -> int:
        """Output features: the parts' rows together."""
        return sum(part.rows for part in self.parts)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x [M, K] @ W^T`` in fp32: the dequantized matmul up to summation order, or with x rounded
        to int16 per 32 values when ``activation_bits`` is 16 (see ``cpu_backend.quant_matmul``)."""
        from bastion.ops import cpu_backend  # the native core is only needed once the path is used

        if len(self.parts) == 1:  # the common case: no column slices to set up
            part = self.parts[0]
            return cpu_backend.quant_matmul(x, part.blocks, part.ggml_type, part.rows, self.threads, self.activation_bits)
        out = torch.empty((x.shape[0], self.out_features), dtype=torch.float32)
        first = 0
        for part in self.parts:  # each part fills its own columns
            cpu_backend.quant_matmul(x, part.blocks, part.ggml_type, part.rows, self.threads, self.activation_bits,
                                     out=out[:, first:first + part.rows])
            first += part.rows
        return out

    def applies(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is a small fp32 CPU batch this weight should serve."""
        return x.shape[0] <= self.max_tokens and x.dtype == torch.float32 and x.device.type == "cpu"


def block_path_max_tokens(threads: int) -> int:
    """Largest step (tokens) the blocks should serve with ``threads`` threads; torch's fp32 GEMM beyond.

    The block GEMV scales with threads better than torch's small-M GEMM (SmolLM2, all 121 matrices,
    int16 activations, 16 rows: 119 -> 65 ms from 1 to 2 threads, torch 102 -> 79 ms). Decode-phase
    throughput of N concurrent requests, thresholds alternated in one engine (2026-11-25, quiet host):
    1 thread, N = 12: 111 tok/s at 8, 124 at 16; N = 16: 133 at 8, 125 at 16. 2 threads, N = 12:
    123 at 8, 218 at 16; N = 24: 194 at 8, 205 at 16, 221 at 24, 222 at 32; N = 32: 227 at 8 to 24,
    218 at 32. Hence 12 rows per thread, at most 32 (untested beyond 2 threads).
    """
    return min(12 * max(1, threads), 32)


def load_quantized(path: str | os.PathLike[str], config: ModelConfig,
                   cache_entry: Path | None = None) -> dict[str, QuantizedWeight]:
    """``read_quantized``, memory-mapped from ``cache_entry`` when there (parsing the GGUF takes seconds).

    A missing cache file is written (atomically) after reading the GGUF, so older entries gain one.
    """
    cached = None if cache_entry is None else cache_entry / _CACHE_FILE
    if cached is not None and cached.is_file():
        parts: dict[str, dict[int, QuantPart]] = {}
        for key, blocks in load_mmap(cached).items():
            name, index, qtype = key.rsplit(":", 2)
            parts.setdefault(name, {})[int(index)] = QuantPart(blocks, KERNEL_TYPES[qtype])
        return {name: QuantizedWeight(tuple(p[i] for i in sorted(p))) for name, p in parts.items()}
    out = read_quantized(path, config)
    if cached is not None and cached.parent.is_dir():
        names = {v: k for k, v in KERNEL_TYPES.items()}
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".tmp-")
        os.close(fd)
        save({f"{name}:{i}:{names[part.ggml_type]}": part.blocks
              for name, w in out.items() for i, part in enumerate(w.parts)}, Path(tmp))
        os.replace(tmp, cached)
    return out


def read_quantized(path: str | os.PathLike[str], config: ModelConfig) -> dict[str, QuantizedWeight]:
    """Our parameter name -> quantized weight, for each linear whose GGUF sources all have kernel types
    (a GGUF row always holds whole blocks, so K fits every type it uses).

    The tied (or untied) output projection is returned under ``"lm_head"``.
    """
    reader = _open_reader(Path(path))
    arch = reader.fields["general.architecture"].contents()
    permuted = arch in _PERMUTED_QK_ARCHITECTURES
    raw: dict[str, tuple[str, np.ndarray]] = {}
    for tensor in reader.tensors:
        qtype = tensor.tensor_type.name
        if qtype not in KERNEL_TYPES or not tensor.name.endswith(".weight"):
            continue
        name = hf_tensor_name(tensor.name)
        data = np.asarray(tensor.data)  # [rows, bytes per row], a view of the file map
        if permuted and ".q_proj." in name:
            data = unpermute_qk(data, config.num_heads)
        elif permuted and ".k_proj." in name:
            data = unpermute_qk(data, config.num_kv_heads)
        raw[name] = (qtype, data)
    out: dict[str, QuantizedWeight] = {}
    head = raw.get("model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight")
    if head is not None:
        out["lm_head"] = _quantized([head])
    for i in range(config.num_layers):
        for target, sources in _LINEAR_GROUPS.items():
            parts = [raw.get(f"model.layers.{i}.{s}") for s in sources]
            if all(p is not None for p in parts):
                out[f"layers.{i}.{target}"] = _quantized([p for p in parts if p is not None])
    return out


def _quantized(sources: list[tuple[str, np.ndarray]]) -> QuantizedWeight:
    """One part per run of same-type sources, each a fresh array torch may own."""
    runs: list[tuple[str, list[np.ndarray]]] = []
    for qtype, data in sources:
        if runs and runs[-1][0] == qtype:
            runs[-1][1].append(data)
        else:
            runs.append((qtype, [data]))
    return QuantizedWeight(tuple(QuantPart(torch.from_numpy(np.concatenate(arrays, axis=0)), KERNEL_TYPES[qtype])
                                 for qtype, arrays in runs))


def attach_quantized(model: nn.Module, weights: dict[str, QuantizedWeight]) -> int:
    """Set ``.quantized`` on each ``nn.Linear`` named in ``weights`` (``lm_head`` on the model); returns the count."""
    for name, weight in weights.items():
        if name == "lm_head":
            model.lm_head_quantized = weight
        else:
            model.get_submodule(name.removesuffix(".weight")).quantized = weight
    return len(weights)


def set_max_tokens(model: nn.Module, max_tokens: int) -> None:
    """Route steps of at most ``max_tokens`` tokens through the blocks (0 turns the path off)."""
    for weight in quantized_weights(model):
        weight.max_tokens = max_tokens


def set_activation_bits(model: nn.Module, bits: int) -> None:
    """Activation precision of every quantized matmul of ``model``: 16 (rounded per block) or 32 (exact)."""
    if bits not in (16, 32):
        raise ValueError(f"activation_bits must be 16 or 32, got {bits}")
    for weight in quantized_weights(model):
        weight.activation_bits = bits


def quantized_weights(model: nn.Module) -> list[QuantizedWeight]:
    """Every quantized weight attached to ``model``."""
    found = [getattr(m, "quantized", None) for m in model.modules()] + [getattr(model, "lm_head_quantized", None)]
    return [w for w in found if isinstance(w, QuantizedWeight)]


def project(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)``, through the quantized blocks when attached and ``x`` is a small fp32 CPU batch."""
    quant = linear.__dict__.get("quantized")  # a plain attribute: skip nn.Module's slow __getattr__
    if quant is None or not quant.applies(x):
        return linear(x)
    out = quant.matmul(x)
    return out if linear.bias is None else out.add_(linear.bias)
