"""The "triton" backend of ``bastion.ops``: validation and host planning around ``bastion.kernels``.

Shape checks are the op layer's (``bastion.ops.validation``, repeated here so direct calls are safe);
this module adds what the Triton kernels need on top: one float dtype shared by q and the caches
(fp16, bf16 or fp32), a contiguous last dim, every tensor on one device, head dims up to
``MAX_HEAD_SIZE``. The attention plan (tile shapes, grid, KV split count) is made here from tensor
sizes and the device's SM count (``bastion.ops.gpu.sm_count``), never from the Triton driver.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bastion import kernels
from bastion.ops.gpu import sm_count
from bastion.ops.sampling import Param, row_parameters, uniforms
from bastion.ops.validation import (
    check_apply_token_bitmask,
    check_paged_attention,
    check_reshape_and_cache,
    check_rms_norm,
    check_rotary_embedding,
    check_sample,
    check_silu_and_mul,
)

__all__ = ["apply_token_bitmask", "paged_attention", "reshape_and_cache", "rms_norm", "rotary_embedding", "sample",
           "silu_and_mul", "supports"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# The largest head compile_check proves spill-free on sm_90 (D256: 254 registers, 40 KB shared memory).
MAX_HEAD_SIZE = 256


def supports(op: str, dtype: torch.dtype) -> bool:
    """Whether ``backend="auto"`` may pick Triton for ``op`` on ``dtype`` data (all ops, 16/32-bit floats)."""
    return dtype in SUPPORTED_DTYPES


def _require_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name} has dtype {t.dtype}; the triton backend supports float16, bfloat16 and float32")


def _require_layout(**tensors: torch.Tensor | None) -> None:
    """Every tensor on one device the kernels can run on, with a unit stride in its last dim."""
    present = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {({n: str(t.device) for n, t in present.items()})}")
    if devices and next(iter(devices)).type != "cuda" and not kernels.interpreted():
        raise ValueError(f"the triton backend needs CUDA tensors (got {next(iter(devices))}); CPU tensors only work "
                         "under the Triton interpreter (TRITON_INTERPRET=1 set before importing bastion.kernels)")
    for name, t in present.items():
        if t.dim() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError(f"{name} needs a contiguous last dim (stride {t.stride(-1)}); call .contiguous()")


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paged attention on Triton (contract: ``bastion.ops.paged_attention``); plans splits on the host."""
    check_paged_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, sliding_window)
    _require_float("q", q)
    if k_cache.dtype != q.dtype:
        raise ValueError(f"k_cache/v_cache dtype {k_cache.dtype} must equal q's dtype {q.dtype} for tl.dot")
    if q.shape[2] > MAX_HEAD_SIZE:
        raise ValueError(f"head_dim {q.shape[2]} exceeds the triton backend's maximum {MAX_HEAD_SIZE}")
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype):
        raise ValueError(f"out must match q's shape {tuple(q.shape)} and dtype {q.dtype}")
    _require_layout(q=q, k_cache=k_cache, v_cache=v_cache, block_table=block_table, seq_lens=seq_lens,
                    cu_seqlens_q=cu_seqlens_q, out=out)
    if seq_lens.shape[0] == 0:
        return torch.zeros_like(q) if out is None else out
    # Host-resident lengths give the exact longest context for free; on a GPU we never sync for it.
    host_max = int(seq_lens.max()) if seq_lens.device.type == "cpu" else None
    num_sms = sm_count(q.device) if q.device.type == "cuda" else kernels.DEFAULT_NUM_SMS  # interpreter: H100's
    plan = kernels.make_plan(q, k_cache, block_table, num_sms, max_context_len=host_max)
    return kernels.paged_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale=scale,
                                   sliding_window=sliding_window, out=out, plan=plan)


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      slot_mapping: torch.Tensor) -> None:
    """KV-cache write on Triton (contract: ``bastion.ops.reshape_and_cache``); slot -1 is skipped."""
    check_reshape_and_cache(key, value, k_cache, v_cache, slot_mapping)
    _require_float("k_cache", k_cache)
    _require_float("key", key)
    _require_layout(key=key, value=value, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)
    kernels.reshape_and_cache(key, value, k_cache, v_cache, slot_mapping)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm (+ fused residual add) on Triton (contract: ``bastion.ops.rms_norm``); inputs are not modified."""
    check_rms_norm(x, weight, residual)
    _require_float("x", x)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    _require_layout(x=x, weight=weight, residual=residual)
    return kernels.rms_norm(x, weight, eps, residual)


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
                     is_neox: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE on Triton (contract: ``bastion.ops.rotary_embedding``); rotates q and k IN PLACE and returns them."""
    check_rotary_embedding(positions, q, k, cos_sin_cache)
    _require_float("q", q)
    _require_float("k", k)
    _require_float("cos_sin_cache", cos_sin_cache)
    _require_layout(positions=positions, q=q, k=k, cos_sin_cache=cos_sin_cache)
    return kernels.rotary_embedding(positions, q, k, cos_sin_cache, is_neox)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """SiLU-and-mul on Triton (contract: ``bastion.ops.silu_and_mul``)."""
    check_silu_and_mul(x)
    _require_float("x", x)
    _require_layout(x=x)
    return kernels.silu_and_mul(x)


def sample(
    logits: torch.Tensor,
    temperature: Param,
    top_k: Param,
    top_p: Param,
    min_p: Param,
    generators: Sequence[torch.Generator | None] | None = None,
) -> torch.Tensor:
    """Sampling on Triton (contract: ``bastion.ops.sample``; same parameter ranges, filter order and uniforms)."""
    check_sample(logits, temperature, top_k, top_p, min_p, generators)
    _require_float("logits", logits)
    _require_layout(logits=logits)
    temp, top_k_t, top_p_t, min_p_t = row_parameters(logits, temperature, top_k, top_p, min_p, torch.float32)
    top_k_t = top_k_t.clamp(max=logits.shape[1]).to(torch.int32)  # >= V disables top-k, as does <= 0
    # The torch backend's uniforms (same generator use): a seeded row draws the same token on both.
    draws = uniforms(logits.shape[0], logits.device, generators).to(torch.float32)
    return kernels.sample(logits, temp, top_k_t, top_p_t, min_p_t, uniforms=draws)


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, indices: torch.Tensor | None = None) -> None:
    """Token bitmask on Triton (contract: ``bastion.ops.apply_token_bitmask``), in place."""
    check_apply_token_bitmask(logits, bitmask, indices)
    _require_float("logits", logits)
    _require_layout(logits=logits, bitmask=bitmask, indices=indices)
    kernels.apply_token_bitmask(logits, bitmask, indices)
