"""Host launchers of paged attention: plan, then run the unified kernel or split-KV + merge."""

from __future__ import annotations

import torch

from ._utils import dot_precision, next_power_of_2
from .attention_plan import AttentionPlan, plan_attention
from .attention_split import merge_splits_kernel, split_kv_attention_kernel
from .attention_unified import unified_attention_kernel

# H100 SXM; callers on other GPUs pass their own count (the ops adapter reads it from torch).
DEFAULT_NUM_SMS = 132


def make_plan(q: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor, num_sms: int,
              num_splits: int | None = None, max_context_len: int | None = None) -> AttentionPlan:
    """Plan from tensor shapes; without ``max_context_len`` the bound is the block table's capacity.

    Callers that hold the context lengths on the host pass their max; device tensors are never read.
    """
    if max_context_len is None:
        max_context_len = block_table.shape[1] * k_cache.shape[1]
    return plan_attention(q.shape[0], block_table.shape[0], q.shape[1], k_cache.shape[2], q.shape[2],
                          max(1, max_context_len), num_sms, num_splits)


def _shared_args(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                 seq_lens: torch.Tensor, cu_seqlens_q: torch.Tensor, scale: float,
                 sliding_window: int | None) -> tuple:
    """Arguments common to both attention kernels, after their output pointers (window 0 = none)."""
    return (q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale, sliding_window or 0,
            seq_lens.shape[0], k_cache.shape[1], q.shape[2], q.stride(0), q.stride(1))


def _cache_strides(k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor) -> tuple[int, ...]:
    """Page/token/head strides of both caches, then the block table's row stride."""
    return (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1),
            v_cache.stride(2), block_table.stride(0))


def split_kv_partials(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                      seq_lens: torch.Tensor, cu_seqlens_q: torch.Tensor, plan: AttentionPlan, scale: float,
                      sliding_window: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the split kernel alone: per-split outputs ``[T, H, S, HEAD_PAD]`` and LSEs ``[T, H, S]`` (fp32)."""
    num_tokens, num_heads = q.shape[0], q.shape[1]
    partial = torch.empty((num_tokens, num_heads, plan.num_splits, plan.head_pad), dtype=torch.float32,
                          device=q.device)
    lse = torch.empty((num_tokens, num_heads, plan.num_splits), dtype=torch.float32, device=q.device)
    grid = (plan.num_q_blocks, k_cache.shape[2], plan.num_splits)
    split_kv_attention_kernel[grid](
        partial, lse, *_shared_args(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale, sliding_window),
        partial.stride(0), partial.stride(1), partial.stride(2), lse.stride(0), lse.stride(1),
        *_cache_strides(k_cache, v_cache, block_table),
        GROUP=plan.group, BLOCK_M=plan.block_m, BLOCK_Q=plan.block_q, TILE=plan.tile, HEAD_PAD=plan.head_pad,
        NUM_SPLITS=plan.num_splits, USE_WINDOW=sliding_window is not None, DOT_PRECISION=dot_precision(q.dtype),
    )
    return partial, lse


def merge_splits(partial: torch.Tensor, lse: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """LSE-weighted merge of ``split_kv_partials`` results into ``out [T, H, D]``."""
    num_splits, head_pad = partial.shape[2], partial.shape[3]
    merge_splits_kernel[(out.shape[0], out.shape[1])](
        out, partial, lse, out.shape[2], out.stride(0), out.stride(1), partial.stride(0), partial.stride(1),
        partial.stride(2), lse.stride(0), lse.stride(1),
        NUM_SPLITS=num_splits, SPLITS_PAD=next_power_of_2(num_splits), HEAD_PAD=head_pad,
    )
    return out


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
    num_sms: int = DEFAULT_NUM_SMS,
    plan: AttentionPlan | None = None,
) -> torch.Tensor:
    """Causal varlen paged attention (contract of ``bastion.ops.paged_attention``); returns ``[T, H, D]``.

    ``plan`` overrides the host plan (e.g. to force a split count); ``num_sms`` feeds the planner.
    Inputs are assumed valid (``bastion.ops`` validates them); q/out/caches need a contiguous last dim.
    """
    scale = q.shape[2] ** -0.5 if scale is None else float(scale)
    out = torch.empty_like(q) if out is None else out
    if q.shape[0] == 0:
        return out
    plan = make_plan(q, k_cache, block_table, num_sms) if plan is None else plan
    if plan.num_splits > 1:
        partial, lse = split_kv_partials(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, plan, scale,
                                         sliding_window)
        return merge_splits(partial, lse, out)
    unified_attention_kernel[(plan.num_q_blocks, k_cache.shape[2])](
        out, *_shared_args(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale, sliding_window),
        out.stride(0), out.stride(1), *_cache_strides(k_cache, v_cache, block_table),
        GROUP=plan.group, BLOCK_M=plan.block_m, BLOCK_Q=plan.block_q, TILE=plan.tile, HEAD_PAD=plan.head_pad,
        USE_WINDOW=sliding_window is not None, DOT_PRECISION=dot_precision(q.dtype),
    )
    return out
