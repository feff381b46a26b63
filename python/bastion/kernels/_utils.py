"""Small host-side helpers shared by the kernel launchers (no Triton code here)."""

from __future__ import annotations

import torch

# tl.dot needs K >= 16 for 16-bit operands on NVIDIA GPUs (K >= 8 for fp32); tiles never go below this.
MIN_DOT_K = 16


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for n <= 1); tl.arange sizes must be powers of two."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative integers."""
    return -(-a // b)


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for tl.dot: exact fp32 ("ieee") for fp32 data, the tensor-core default otherwise.

    On the GPU, fp32 tl.dot would otherwise run as TF32 (10-bit mantissa), far off a float64 oracle.
    """
    return "ieee" if dtype == torch.float32 else "tf32"
