"""Unified paged attention: varlen prefill and decode of a whole batch in ONE launch (no KV split).

Grid ``(num_q_blocks, num_kv_heads)``; see ``attention_core`` for how programs map to work.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .attention_core import attend_tiles, key_tile_range, load_query_tile, locate_query_block, query_rows


@triton.jit
def unified_attention_kernel(
    out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_lens_ptr, cu_seqlens_q_ptr,
    scale, sliding_window, num_seqs, block_size, head_size,
    stride_q_tok, stride_q_head, stride_o_tok, stride_o_head,
    stride_k_blk, stride_k_tok, stride_k_head, stride_v_blk, stride_v_tok, stride_v_head, stride_bt_seq,
    GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr, TILE: tl.constexpr,
    HEAD_PAD: tl.constexpr, USE_WINDOW: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Attention output of one query block x one KV head, normalised and written to ``out``."""
    kv_head = tl.program_id(1)
    seq_idx, q_start, q_len, q_block_local, context_len = locate_query_block(
        cu_seqlens_q_ptr, seq_lens_ptr, tl.program_id(0), num_seqs, BLOCK_Q)
    if q_block_local * BLOCK_Q >= q_len:
        return  # one of the spare blocks of the host's upper-bound grid
    token, head, valid, position = query_rows(q_block_local, q_len, context_len, kv_head, GROUP, BLOCK_M, BLOCK_Q)
    q = load_query_tile(q_ptr, q_start, token, head, valid, head_size, stride_q_tok, stride_q_head, HEAD_PAD)
    tile_start, tile_end = key_tile_range(q_block_local, q_len, context_len, sliding_window, TILE, BLOCK_Q,
                                          USE_WINDOW)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_PAD], tl.float32)
    m_i, l_i, acc = attend_tiles(
        q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, block_table_ptr + seq_idx.to(tl.int64) * stride_bt_seq,
        kv_head, position, context_len + q_len, tile_start, tile_end, scale, sliding_window, block_size,
        head_size, stride_k_blk, stride_k_tok, stride_k_head, stride_v_blk, stride_v_tok, stride_v_head,
        TILE, HEAD_PAD, USE_WINDOW, DOT_PRECISION)
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    dims = tl.arange(0, HEAD_PAD)
    offsets = (q_start + token).to(tl.int64)[:, None] * stride_o_tok + head[:, None] * stride_o_head + dims[None, :]
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=valid[:, None] & (dims < head_size)[None, :])
