"""SiLU-and-mul, the gated-MLP activation: ``silu(x[..., :d]) * x[..., d:]``."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import next_power_of_2

MAX_BLOCK = 1024


@triton.jit
def silu_and_mul_kernel(out_ptr, x_ptr, d, stride_out, stride_x, BLOCK: tl.constexpr):
    """Grid (rows, cdiv(d, BLOCK)); computed in fp32, stored in the output dtype."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < d
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + d + cols, mask=mask, other=0.0).to(tl.float32)
    silu = gate / (1.0 + tl.exp(-gate))
    tl.store(out_ptr + row * stride_out + cols, (silu * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``x [..., 2d]`` -> ``[..., d]``; needs a contiguous last dim."""
    d = x.shape[-1] // 2
    x2 = x.reshape(-1, 2 * d)
    out = torch.empty((x2.shape[0], d), dtype=x.dtype, device=x.device)
    block = min(MAX_BLOCK, next_power_of_2(d))
    if x2.shape[0] > 0 and d > 0:
        silu_and_mul_kernel[(x2.shape[0], triton.cdiv(d, block))](out, x2, d, out.stride(0), x2.stride(0), BLOCK=block)
    return out.view(*x.shape[:-1], d)
