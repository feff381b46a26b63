"""Rotary position embedding of q and k, in place, NeoX (rotate_half) or GPT-J (interleaved) pairing."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import next_power_of_2


@triton.jit
def rotate_heads(x_ptr, stride_head, num_heads, cos, sin, pair_mask, HALF_ROT, IS_NEOX: tl.constexpr,
                 HEADS_PAD: tl.constexpr, HALF_PAD: tl.constexpr):
    """Rotate the first ``2 * HALF_ROT`` dims of every head of one token; later dims are left alone."""
    heads = tl.arange(0, HEADS_PAD)
    pairs = tl.arange(0, HALF_PAD)
    if IS_NEOX:  # pair (i, i + rot_dim/2)
        first_dim = pairs
        second_dim = pairs + HALF_ROT
    else:  # GPT-J: pair (2i, 2i + 1)
        first_dim = 2 * pairs
        second_dim = 2 * pairs + 1
    mask = (heads < num_heads)[:, None] & pair_mask[None, :]
    base = x_ptr + heads[:, None] * stride_head
    first = tl.load(base + first_dim[None, :], mask=mask, other=0.0).to(tl.float32)
    second = tl.load(base + second_dim[None, :], mask=mask, other=0.0).to(tl.float32)
    new_first = first * cos[None, :] - second * sin[None, :]
    new_second = second * cos[None, :] + first * sin[None, :]
    tl.store(base + first_dim[None, :], new_first.to(x_ptr.dtype.element_ty), mask=mask)
    tl.store(base + second_dim[None, :], new_second.to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rotary_embedding_kernel(
    positions_ptr, q_ptr, k_ptr, cos_sin_ptr, num_q_heads, num_k_heads, half_rot,
    stride_q_tok, stride_q_head, stride_k_tok, stride_k_head, stride_cos_sin,
    IS_NEOX: tl.constexpr, Q_HEADS_PAD: tl.constexpr, K_HEADS_PAD: tl.constexpr, HALF_PAD: tl.constexpr,
):
    """One program per token; cos/sin for its position are read once (fp32) and shared by q and k."""
    token = tl.program_id(0).to(tl.int64)
    position = tl.load(positions_ptr + token).to(tl.int64)
    pairs = tl.arange(0, HALF_PAD)
    pair_mask = pairs < half_rot
    cos = tl.load(cos_sin_ptr + position * stride_cos_sin + pairs, mask=pair_mask, other=1.0).to(tl.float32)
    sin = tl.load(cos_sin_ptr + position * stride_cos_sin + half_rot + pairs, mask=pair_mask,
                  other=0.0).to(tl.float32)
    rotate_heads(q_ptr + token * stride_q_tok, stride_q_head, num_q_heads, cos, sin, pair_mask, half_rot,
                 IS_NEOX, Q_HEADS_PAD, HALF_PAD)
    rotate_heads(k_ptr + token * stride_k_tok, stride_k_head, num_k_heads, cos, sin, pair_mask, half_rot,
                 IS_NEOX, K_HEADS_PAD, HALF_PAD)


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
                     is_neox: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate ``q [T, Hq, D]`` and ``k [T, Hk, D]`` in place at ``positions``; returns ``(q, k)``.

    ``cos_sin_cache [max_pos, rot_dim]`` holds cos then sin halves; dims past rot_dim pass through.
    """
    half_rot = cos_sin_cache.shape[1] // 2
    if q.shape[0] > 0 and half_rot > 0:
        rotary_embedding_kernel[(q.shape[0],)](
            positions, q, k, cos_sin_cache, q.shape[1], k.shape[1], half_rot,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos_sin_cache.stride(0),
            IS_NEOX=is_neox, Q_HEADS_PAD=next_power_of_2(q.shape[1]), K_HEADS_PAD=next_power_of_2(k.shape[1]),
            HALF_PAD=next_power_of_2(half_rot),
        )
    return q, k
