"""Layers whose weights stay in the GGUF file's own blocks: ``QuantizedLinear`` and ``QuantizedEmbedding``.

A weight is one or more ``QuantPart``s stacked along the output rows (a fused QKV of a Q4_K_M file:
q and k in Q4_K, v in Q6_K), each a ``[rows, bytes per row]`` uint8 view of the memory-mapped file
(or of a small copy where rows had to be reordered). No fp32 copy of a quantized weight is kept:

- steps of ``M <= max_tokens`` rows (``kernel_max_tokens``) run bastion's block kernel
  (``_core.cpu.quant_matmul``): activations rounded per 32 values once per step, integer dot products
  on the blocks (AVX-512 VNNI / AVX-VNNI ``vpdpbusd`` where the CPU has it, AVX2 otherwise; 8 rows of x
  per weight decode), output columns split over the threads;
- larger steps dequantize a panel of rows at a time into a small fp32 buffer and hand it to torch's
  GEMM, so the weight is decoded once per step however many tokens it serves.
  ``bench/bench_quant_gemm.py`` times both (and torch's packed int4/int8 matmuls) on real shapes; the
  thresholds of ``kernel_max_tokens`` come from its figures (bench/README.md).

``activation_bits`` is the block kernel's precision: 32 exact fp32 math (the dequantized matmul up to
summation order); 16 int16 per 32 values (~2e-5 relative error per matmul; on VNNI CPUs split in two
int8 planes, 2.5-3.5x the AVX2 int16 kernel's rate); 8 llama.cpp's Q8_0 activations, int8 per 32 values
(~5e-3 per matmul, a further 1.2-1.4x; enough to change SmolLM2-135M's greedy answer to "What is the
capital of France?", so never a default). Every row of x is rounded and summed on its own, so a row's
result does not depend on the batch it is in. The panel GEMM runs in ``panel_dtype``: float32 (exact),
or bfloat16 on CPUs that multiply it natively (panel and activations rounded to bf16: ~3e-3 relative
error per matmul; greedy output then depends on how requests were batched).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# ggml type numbers of the GGUF block formats the C++ kernels read (quant_gemv.h)
KERNEL_TYPES: dict[str, int] = {
    "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
    "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14,
}
# unquantized types a part may also hold (read by dequantize_rows; F32 parts are used as they are)
FLOAT_TYPES: dict[str, int] = {"F32": 0, "F16": 1, "BF16": 30}
TYPE_NAMES: dict[int, str] = {code: name for name, code in (KERNEL_TYPES | FLOAT_TYPES).items()}
# Activation precisions of the block kernel: 32 exact fp32, 16 int16 per 32 values, 8 int8 per 32 values.
ACTIVATION_BITS = (8, 16, 32)
# Largest step (tokens) on the block kernel when the thread count is unknown (see kernel_max_tokens).
DEFAULT_MAX_TOKENS = 8
# fp32 bytes of one dequantized panel: big enough for torch's GEMM to run at full speed, small
# enough to stay in the last-level cache (see bench/README.md, "quantized GEMM")
PANEL_BYTES = 4 << 20


@dataclass(frozen=True)
class QuantPart:
    """Consecutive output rows of a weight in one ggml type: ``blocks`` uint8 ``[rows, bytes per row]``
    (for an F32 part, ``blocks`` is the fp32 ``[rows, K]`` tensor itself)."""

    blocks: torch.Tensor
    ggml_type: int

    @property
    def rows(self) -> int:
        """Output rows (features) of this part."""
        return self.blocks.shape[0]

    @property
    def type_name(self) -> str:
        """The ggml type's name ("Q4_K", "F16", ...)."""
        return TYPE_NAMES[self.ggml_type]

    @property
    def on_kernel(self) -> bool:
        """Whether the block kernel reads this part (a quantized GGUF type)."""
        return self.ggml_type in TYPE_NAMES and self.type_name in KERNEL_TYPES

    @property
    def nbytes(self) -> int:
        """Bytes the part's weights take."""
        return self.blocks.numel() * self.blocks.element_size()


def kernel_max_tokens(threads: int, panel_dtype: torch.dtype = torch.float32, activation_bits: int = 16) -> int:
    """Largest step (tokens) the block kernel should serve with ``threads`` threads and ``activation_bits``;
    the panel GEMM in ``panel_dtype`` beyond.

    Integer activations (16 or 8 bits) on a VNNI CPU (``quant_isa()`` avx512vnni or avxvnni): one decoder
    layer's linears, 1 thread (``bench/bench_quant_gemm.py``, 2026-12-04, bench/README.md): the int16
    kernel beats the fp32 panels at every M measured up to 128 (1B: 96 vs 78 GFLOP/s at 128, 1.7B 105 vs
    91, 135M 115 vs 96) and ties them at 256-512 (103-114 vs 97-102, where the exact panels are kept):
    hence 128. Against bf16 panels it wins up to 8 rows (1B: 99 vs 59 GFLOP/s) and loses at 16 (101 vs
    109); the int8 kernel wins up to 16 (135M: 158 vs 120) and loses at 32: hence 8 and 16.

    fp32 activations, or integer ones on a plain AVX2 CPU (the int16 ``madd`` kernel): the block GEMV
    scales with threads better than torch's small-M fp32 GEMM (SmolLM2, all 121 matrices, int16
    activations, 16 rows: 119 -> 65 ms from 1 to 2 threads, torch 102 -> 79 ms). Decode-phase throughput
    of N concurrent requests, thresholds alternated in one engine (2026-11-25, quiet host): 1 thread,
    N = 12: 111 tok/s at 8, 124 at 16; N = 16: 133 at 8, 125 at 16. 2 threads, N = 12: 123 at 8, 218 at
    16; N = 24: 194 at 8, 205 at 16, 221 at 24, 222 at 32; N = 32: 227 at 8 to 24, 218 at 32. Hence 12
    rows per thread, at most 32 (untested beyond 2 threads); int8 on AVX2 (``maddubs``, 1.8-2x the int16
    kernel) 64. bf16 panels (1.7B shapes, 2 threads): even with the block kernel at 8 rows, 2.2x faster
    at 16 rows and 3-4x at 24-32: hence 8.
    """
    if activation_bits not in ACTIVATION_BITS:
        raise ValueError(f"activation_bits must be 8, 16 or 32, got {activation_bits}")
    vnni = activation_bits != 32 and _quant_isa() != "avx2"
    if panel_dtype == torch.bfloat16:
        return 16 if vnni and activation_bits == 8 else 8
    if vnni:
        return 128
    if activation_bits == 8:
        return 64
    return min(12 * max(1, threads), 32)


def _quant_isa() -> str:
    """The block kernel's instruction set ("avx2" without the native core: the conservative thresholds)."""
    try:
        from bastion._core import cpu
    except ImportError:
        return "avx2"
    return cpu.quant_isa()


def _panel_rows(k: int) -> int:
    return max(64, PANEL_BYTES // (4 * k) // 64 * 64)


@functools.cache
def bf16_gemm_is_fast() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), so torch's bf16 GEMM beats fp32:
    5x on the dev machine's Zen 5 (bench/README.md); on a plain AVX2 CPU it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def dequantize_part(part: QuantPart, first: int = 0, rows: int | None = None, threads: int = 1,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows ``first .. first + rows`` of ``part`` as ``[rows, K]`` fp32 (exact: the dequantized weight)
    or bf16 (rounded to nearest even)."""
    count = part.rows - first if rows is None else rows
    if part.ggml_type == FLOAT_TYPES["F32"]:
        return part.blocks[first:first + count].to(dtype)
    k = _columns(part)
    out = torch.empty((count, k), dtype=dtype)
    from bastion._core import cpu  # the native core is only needed once a quantized layer runs

    cpu.dequantize_rows(part.blocks.data_ptr(), part.ggml_type, k, 0, first, count, out.data_ptr(),
                        dtype == torch.bfloat16, threads)
    return out


def _columns(part: QuantPart) -> int:
    """K of a part, from its row bytes and its type's block size."""
    import gguf

    if part.ggml_type == FLOAT_TYPES["F32"]:
        return part.blocks.shape[1]
    values, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(part.ggml_type)]
    return part.blocks.shape[1] // nbytes * values


class QuantizedLinear(nn.Module):
    """``y = x W^T (+ bias)`` with ``W [out_features, in_features]`` kept as GGUF blocks (see module doc)."""

    def __init__(self, in_features: int, out_features: int, parts: tuple[QuantPart, ...],
                 bias: torch.Tensor | None = None, *, activation_bits: int = 32, threads: int | None = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, panel_dtype: torch.dtype = torch.float32) -> None:
        """``parts`` stack to ``out_features`` rows of ``in_features`` columns each; ``threads`` None uses
        ``cpu_backend.num_threads()`` (the engine's ``num_threads``)."""
        super().__init__()
        if sum(p.rows for p in parts) != out_features or not parts:
            raise ValueError(f"QuantizedLinear: parts hold {sum(p.rows for p in parts)} rows, expected {out_features}")
        for part in parts:
            if _columns(part) != in_features:
                raise ValueError(f"QuantizedLinear: a {part.type_name} part has {_columns(part)} columns, "
                                 f"expected {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.parts = parts
        self.bias = None if bias is None else nn.Parameter(bias.float(), requires_grad=False)
        self.activation_bits = activation_bits
        self.panel_dtype = panel_dtype
        self.threads = threads
        self.max_tokens = max_tokens if all(p.on_kernel for p in parts) else 0

    @property
    def nbytes(self) -> int:
        """Bytes of the weight as stored."""
        return sum(p.nbytes for p in self.parts)

    def _threads(self) -> int:
        if self.threads is not None:
            return self.threads
        from bastion.ops import cpu_backend

        return cpu_backend.num_threads()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` (fp32, CPU) -> ``[..., out_features]`` fp32."""
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise ValueError(f"QuantizedLinear runs fp32 CPU activations, got {x.dtype} on {x.device}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).contiguous()
        out = torch.empty((x2.shape[0], self.out_features), dtype=torch.float32)
        threads = self._threads()
        if x2.shape[0] <= self.max_tokens:
            self._kernel(x2, out, threads)
        else:
            self._panels(x2, out, threads)
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*lead, self.out_features)

    def _kernel(self, x: torch.Tensor, out: torch.Tensor, threads: int) -> None:
        from bastion._core import cpu as kernels  # imported once a quantized layer runs

        first = 0
        for part in self.parts:  # each part fills its own column range of out
            kernels.quant_matmul(x.data_ptr(), part.blocks.data_ptr(), out[:, first:].data_ptr(), x.shape[0],
                                 part.rows, self.in_features, part.ggml_type, threads, self.activation_bits,
                                 self.out_features)
            first += part.rows

    def _panels(self, x: torch.Tensor, out: torch.Tensor, threads: int) -> None:
        first = 0
        step = _panel_rows(self.in_features)
        dtype = self.panel_dtype
        x = x.to(dtype)
        for part in self.parts:
            for row in range(0, part.rows, step):
                rows = min(step, part.rows - row)
                panel = dequantize_part(part, row, rows, threads, dtype)
                dest = out[:, first + row:first + row + rows]
                if dest.is_contiguous() and dtype == torch.float32:  # the panel spans every output column
                    torch.mm(x, panel.T, out=dest)
                else:
                    dest.copy_(torch.mm(x, panel.T))
            first += part.rows

    def extra_repr(self) -> str:
        """Shape and the parts' types, for ``print(model)``."""
        types = "+".join(p.type_name for p in self.parts)
        return f"in_features={self.in_features}, out_features={self.out_features}, types={types}, " \
               f"bias={self.bias is not None}"


class QuantizedEmbedding(nn.Module):
    """A token table kept as GGUF blocks; ``forward`` dequantizes just the looked-up rows."""

    def __init__(self, part: QuantPart, embedding_dim: int) -> None:
        """``part`` holds all ``num_embeddings`` rows of ``embedding_dim`` values."""
        super().__init__()
        if _columns(part) != embedding_dim:
            raise ValueError(f"QuantizedEmbedding: rows have {_columns(part)} values, expected {embedding_dim}")
        self.part = part
        self.num_embeddings, self.embedding_dim = part.rows, embedding_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` int64 ``[T]`` -> fp32 ``[T, embedding_dim]``."""
        flat = ids.reshape(-1).to(torch.int64).contiguous()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise IndexError(f"token id out of range for a {self.num_embeddings}-row embedding")
        out = torch.empty((flat.numel(), self.embedding_dim), dtype=torch.float32)
        if self.part.ggml_type == FLOAT_TYPES["F32"]:
            torch.index_select(self.part.blocks, 0, flat, out=out)
        else:
            from bastion._core import cpu  # imported once a quantized embedding is read

            cpu.dequantize_rows(self.part.blocks.data_ptr(), self.part.ggml_type, self.embedding_dim,
                                flat.data_ptr(), 0, flat.numel(), out.data_ptr(), False, 1)
        return out.view(*ids.shape, self.embedding_dim)


def quantized_linears(model: nn.Module) -> list[QuantizedLinear]:
    """Every ``QuantizedLinear`` of ``model`` (the output head included)."""
    return [m for m in model.modules() if isinstance(m, QuantizedLinear)]


def configure(model: nn.Module, *, activation_bits: int | None = None, max_tokens: int | None = None,
              threads: int | None = None, panel_dtype: torch.dtype | None = None) -> None:
    """Set the activation precision (16 or 32), the block kernel's largest step (0: panels only), the
    thread count and the panel GEMM's dtype (float32 or bfloat16) of every quantized linear of ``model``;
    None leaves a setting as it is."""
    if activation_bits is not None and activation_bits not in ACTIVATION_BITS:
        raise ValueError(f"activation_bits must be 8, 16 or 32, got {activation_bits}")
    if panel_dtype not in (None, torch.float32, torch.bfloat16):
        raise ValueError(f"panel_dtype must be float32 or bfloat16, got {panel_dtype}")
    for linear in quantized_linears(model):
        if activation_bits is not None:
            linear.activation_bits = activation_bits
        if max_tokens is not None:
            linear.max_tokens = max_tokens if all(p.on_kernel for p in linear.parts) else 0
        if threads is not None:
            linear.threads = threads
        if panel_dtype is not None:
            linear.panel_dtype = panel_dtype
