"""RMSNorm, optionally fused with the residual add of a pre-norm transformer block."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import next_power_of_2

# Columns per loop step: wide enough for one pass at common hidden sizes, small enough for registers.
MAX_BLOCK = 4096


@triton.jit
def rms_norm_kernel(
    out_ptr, residual_out_ptr, x_ptr, residual_ptr, weight_ptr, n_cols, eps,
    stride_out, stride_residual_out, stride_x, stride_residual,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
):
    """One program per row: (optionally h = x + residual, stored) then h * rsqrt(mean(h^2) + eps) * w.

    Pass 2 re-reads h from where pass 1 left it (the stored residual, rounded to its dtype), which is
    what the next layer will see as well.
    """
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    h_row = residual_out_ptr + row * stride_residual_out if HAS_RESIDUAL else x_row
    sum_sq = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        h = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            h += tl.load(residual_ptr + row * stride_residual + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(h_row + cols, h.to(residual_out_ptr.dtype.element_ty), mask=mask)
        sum_sq += h * h
    inv_rms = 1.0 / tl.sqrt(tl.sum(sum_sq, 0) / n_cols + eps)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        h = tl.load(h_row + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * stride_out + cols, (h * inv_rms * w).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dim of ``x``; with ``residual`` returns ``(out, x + residual)`` (new tensors)."""
    hidden = x.shape[-1]
    x2 = x.reshape(-1, hidden)
    res2 = None if residual is None else residual.reshape(-1, hidden)
    out = torch.empty_like(x2)
    new_residual = out if res2 is None else torch.empty_like(res2)
    block = min(MAX_BLOCK, next_power_of_2(hidden))
    if x2.shape[0] > 0:
        rms_norm_kernel[(x2.shape[0],)](
            out, new_residual, x2, x2 if res2 is None else res2, weight, hidden, float(eps),
            out.stride(0), new_residual.stride(0), x2.stride(0), x2.stride(0) if res2 is None else res2.stride(0),
            HAS_RESIDUAL=res2 is not None, BLOCK=block,
        )
    if residual is None:
        return out.view(x.shape)
    return out.view(x.shape), new_residual.view(residual.shape)
