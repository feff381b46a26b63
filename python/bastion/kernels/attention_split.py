"""Split-KV paged attention (flash-decoding): each query block's KV range is cut into ``NUM_SPLITS``
pieces processed by separate programs, then merged by log-sum-exp.

Used when the unified grid would leave SMs idle (few sequences x KV heads, long contexts). The split
count is a constexpr chosen on the host (``attention_plan``); a sequence whose KV range has fewer
tiles than splits leaves some splits empty: those write LSE = -inf and a zero partial output, and the
merge gives them weight 0.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .attention_core import attend_tiles, key_tile_range, load_query_tile, locate_query_block, query_rows


@triton.jit
def split_kv_attention_kernel(
    partial_out_ptr, lse_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_lens_ptr, cu_seqlens_q_ptr,
    scale, sliding_window, num_seqs, block_size, head_size,
    stride_q_tok, stride_q_head, stride_po_tok, stride_po_head, stride_po_split, stride_lse_tok, stride_lse_head,
    stride_k_blk, stride_k_tok, stride_k_head, stride_v_blk, stride_v_tok, stride_v_head, stride_bt_seq,
    GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr, TILE: tl.constexpr,
    HEAD_PAD: tl.constexpr, NUM_SPLITS: tl.constexpr, USE_WINDOW: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Partial attention (normalised within the split) and its LSE for one query block x KV head x split."""
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_idx, q_start, q_len, q_block_local, context_len = locate_query_block(
        cu_seqlens_q_ptr, seq_lens_ptr, tl.program_id(0), num_seqs, BLOCK_Q)
    if q_block_local * BLOCK_Q >= q_len:
        return
    token, head, valid, position = query_rows(q_block_local, q_len, context_len, kv_head, GROUP, BLOCK_M, BLOCK_Q)
    q = load_query_tile(q_ptr, q_start, token, head, valid, head_size, stride_q_tok, stride_q_head, HEAD_PAD)
    tile_start, tile_end = key_tile_range(q_block_local, q_len, context_len, sliding_window, TILE, BLOCK_Q,
                                          USE_WINDOW)
    tiles_per_split = tl.cdiv(tile_end - tile_start, NUM_SPLITS)
    split_start = tile_start + split * tiles_per_split
    split_end = tl.minimum(split_start + tiles_per_split, tile_end)  # <= split_start for an empty split
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_PAD], tl.float32)
    m_i, l_i, acc = attend_tiles(
        q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, block_table_ptr + seq_idx.to(tl.int64) * stride_bt_seq,
        kv_head, position, context_len + q_len, split_start, split_end, scale, sliding_window, block_size,
        head_size, stride_k_blk, stride_k_tok, stride_k_head, stride_v_blk, stride_v_tok, stride_v_head,
        TILE, HEAD_PAD, USE_WINDOW, DOT_PRECISION)
    seen = l_i > 0.0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("-inf"))
    row_tok = (q_start + token).to(tl.int64)
    dims = tl.arange(0, HEAD_PAD)
    po_offsets = row_tok[:, None] * stride_po_tok + head[:, None] * stride_po_head + split * stride_po_split
    tl.store(partial_out_ptr + po_offsets + dims[None, :], out, mask=valid[:, None])
    tl.store(lse_ptr + row_tok * stride_lse_tok + head * stride_lse_head + split, lse, mask=valid)


@triton.jit
def merge_splits_kernel(
    out_ptr, partial_out_ptr, lse_ptr, head_size,
    stride_o_tok, stride_o_head, stride_po_tok, stride_po_head, stride_po_split, stride_lse_tok, stride_lse_head,
    NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr, HEAD_PAD: tl.constexpr,
):
    """out[token, head] = sum_i exp(LSE_i - LSE_max) * O_i / sum_i exp(LSE_i - LSE_max); grid (tokens, heads)."""
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    splits = tl.arange(0, SPLITS_PAD)
    dims = tl.arange(0, HEAD_PAD)
    lse = tl.load(lse_ptr + token * stride_lse_tok + head * stride_lse_head + splits, mask=splits < NUM_SPLITS,
                  other=float("-inf"))
    lse_max = tl.max(lse, 0)
    # All splits empty only happens for a query that sees no key at all; its output is defined as 0.
    weights = tl.where(lse == float("-inf"), 0.0, tl.exp(lse - tl.where(lse_max == float("-inf"), 0.0, lse_max)))
    total = tl.sum(weights, 0)
    po_offsets = token * stride_po_tok + head * stride_po_head + splits[:, None] * stride_po_split + dims[None, :]
    partial = tl.load(partial_out_ptr + po_offsets, mask=(splits < NUM_SPLITS)[:, None], other=0.0)
    out = tl.sum(partial * weights[:, None], 0) / tl.where(total == 0.0, 1.0, total)
    tl.store(out_ptr + token * stride_o_tok + head * stride_o_head + dims, out.to(out_ptr.dtype.element_ty),
             mask=dims < head_size)
