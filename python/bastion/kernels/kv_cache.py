"""KV-cache write (reshape_and_cache): scatter this step's keys/values into their paged slots."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import next_power_of_2


@triton.jit
def store_token_heads(src_ptr, dst_ptr, stride_src_head, stride_dst_head, num_heads, head_size,
                      HEADS_PAD: tl.constexpr, HEAD_PAD: tl.constexpr):
    """Copy one token's ``[num_heads, head_size]`` rows from ``src`` to ``dst``, casting to dst's dtype."""
    heads = tl.arange(0, HEADS_PAD)
    dims = tl.arange(0, HEAD_PAD)
    mask = (heads < num_heads)[:, None] & (dims < head_size)[None, :]
    rows = tl.load(src_ptr + heads[:, None] * stride_src_head + dims[None, :], mask=mask)
    tl.store(dst_ptr + heads[:, None] * stride_dst_head + dims[None, :], rows.to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def reshape_and_cache_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr, num_kv_heads, head_size, block_size,
    stride_key_tok, stride_key_head, stride_value_tok, stride_value_head,
    stride_kc_blk, stride_kc_tok, stride_kc_head, stride_vc_blk, stride_vc_tok, stride_vc_head,
    HEADS_PAD: tl.constexpr, HEAD_PAD: tl.constexpr,
):
    """One program per token: write key/value to slot ``slot_mapping[token]``; slot < 0 is a padded token."""
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    block = slot // block_size
    offset = slot % block_size
    store_token_heads(key_ptr + token * stride_key_tok, k_cache_ptr + block * stride_kc_blk + offset * stride_kc_tok,
                      stride_key_head, stride_kc_head, num_kv_heads, head_size, HEADS_PAD, HEAD_PAD)
    store_token_heads(value_ptr + token * stride_value_tok,
                      v_cache_ptr + block * stride_vc_blk + offset * stride_vc_tok,
                      stride_value_head, stride_vc_head, num_kv_heads, head_size, HEADS_PAD, HEAD_PAD)


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      slot_mapping: torch.Tensor) -> None:
    """Write ``key/value [T, Hkv, D]`` into ``[num_blocks, block_size, Hkv, D]`` caches at ``slot_mapping``.

    Inputs are assumed valid (``bastion.ops`` validates); every tensor needs a contiguous last dim.
    """
    num_tokens, num_kv_heads, head_size = key.shape
    if num_tokens == 0:
        return
    reshape_and_cache_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping, num_kv_heads, head_size, k_cache.shape[1],
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1),
        v_cache.stride(2),
        HEADS_PAD=next_power_of_2(num_kv_heads), HEAD_PAD=next_power_of_2(head_size),
    )
