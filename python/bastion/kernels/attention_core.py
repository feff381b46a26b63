"""Device-side building blocks shared by the unified and the split-KV paged attention kernels.

Work decomposition (both kernels): a program owns one *query block* of one sequence and one KV head.
A query block is ``BLOCK_Q`` consecutive query tokens of a sequence; its ``BLOCK_M = BLOCK_Q * GROUP``
rows are (token, query head of the KV head's group) pairs, so the whole GQA group shares one
``tl.dot`` per KV tile and K/V are read once per group. Sequence ``s`` owns the global query blocks
starting at ``cu_seqlens_q[s] // BLOCK_Q + s``: a bound the host computes from ``num_tokens`` alone
(no device sync), at the price of at most one idle program per sequence.

KV tiles are ``TILE`` tokens; each token's page is looked up in the block table, so ``TILE`` and
the cache's ``block_size`` are independent (block sizes like 15 or 17 work).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def find_sequence(cu_seqlens_q_ptr, q_block_global, num_seqs, BLOCK_Q: tl.constexpr):
    """Binary search for the sequence owning global query block ``q_block_global``."""
    left = 0
    right = num_seqs
    while left < right:
        mid = (left + right) // 2
        first_block = tl.load(cu_seqlens_q_ptr + mid) // BLOCK_Q + mid
        if first_block <= q_block_global:
            left = mid + 1
        else:
            right = mid
    return left - 1


@triton.jit
def locate_query_block(cu_seqlens_q_ptr, seq_lens_ptr, q_block_global, num_seqs, BLOCK_Q: tl.constexpr):
    """(seq_idx, first query token, query count, local block index, cached tokens before the queries)."""
    seq_idx = find_sequence(cu_seqlens_q_ptr, q_block_global, num_seqs, BLOCK_Q)
    q_start = tl.load(cu_seqlens_q_ptr + seq_idx)
    q_len = tl.load(cu_seqlens_q_ptr + seq_idx + 1) - q_start
    q_block_local = q_block_global - (q_start // BLOCK_Q + seq_idx)
    context_len = tl.load(seq_lens_ptr + seq_idx) - q_len
    return seq_idx, q_start, q_len, q_block_local, context_len


@triton.jit
def query_rows(q_block_local, q_len, context_len, kv_head, GROUP: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_Q: tl.constexpr):
    """Per row of the block: (token index within the sequence, query head, row valid, absolute position)."""
    rows = tl.arange(0, BLOCK_M)
    token_in_block = rows // GROUP
    token = q_block_local * BLOCK_Q + token_in_block
    head = kv_head * GROUP + rows % GROUP
    valid = (token_in_block < BLOCK_Q) & (token < q_len)
    # Invalid rows get position -1: they see no key and are never stored.
    position = tl.where(valid, context_len + token, -1)
    return token, head, valid, position


@triton.jit
def load_query_tile(q_ptr, q_start, token, head, valid, head_size, stride_q_tok, stride_q_head,
                    HEAD_PAD: tl.constexpr):
    """The ``[BLOCK_M, HEAD_PAD]`` query tile (zero in padded rows and columns)."""
    dims = tl.arange(0, HEAD_PAD)
    offsets = (q_start + token).to(tl.int64)[:, None] * stride_q_tok + head[:, None] * stride_q_head + dims[None, :]
    return tl.load(q_ptr + offsets, mask=valid[:, None] & (dims < head_size)[None, :], other=0.0)


@triton.jit
def key_tile_range(q_block_local, q_len, context_len, sliding_window, TILE: tl.constexpr, BLOCK_Q: tl.constexpr,
                   USE_WINDOW: tl.constexpr):
    """[first, last) KV tiles any query of the block can see (causal, and the window if enabled)."""
    last_token = tl.minimum(q_block_local * BLOCK_Q + BLOCK_Q, q_len) - 1
    tile_end = (context_len + last_token) // TILE + 1
    tile_start = 0
    if USE_WINDOW:
        first_visible = tl.maximum(context_len + q_block_local * BLOCK_Q - sliding_window + 1, 0)
        tile_start = first_visible // TILE
    return tile_start, tile_end


@triton.jit
def attend_tiles(q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, block_table_row_ptr, kv_head, position,
                 seq_len, tile_start, tile_end, scale, sliding_window, block_size, head_size,
                 stride_k_blk, stride_k_tok, stride_k_head, stride_v_blk, stride_v_tok, stride_v_head,
                 TILE: tl.constexpr, HEAD_PAD: tl.constexpr, USE_WINDOW: tl.constexpr,
                 DOT_PRECISION: tl.constexpr):
    """Online-softmax attention of the query tile over KV tiles [tile_start, tile_end).

    Returns the running (row max, row sum of exp, unnormalised output); rows that saw no key keep
    max = -inf and sum = 0, which callers turn into a zero output / LSE = -inf.
    """
    dims = tl.arange(0, HEAD_PAD)
    dim_mask = dims < head_size
    for tile in range(tile_start, tile_end):
        key_pos = tile * TILE + tl.arange(0, TILE)
        key_valid = key_pos < seq_len
        page = tl.load(block_table_row_ptr + key_pos // block_size, mask=key_valid, other=0).to(tl.int64)
        in_page = (key_pos % block_size).to(tl.int64)
        k_off = page * stride_k_blk + in_page * stride_k_tok + kv_head * stride_k_head
        v_off = page * stride_v_blk + in_page * stride_v_tok + kv_head * stride_v_head
        k = tl.load(k_cache_ptr + k_off[None, :] + dims[:, None], mask=dim_mask[:, None] & key_valid[None, :],
                    other=0.0)
        v = tl.load(v_cache_ptr + v_off[:, None] + dims[None, :], mask=key_valid[:, None] & dim_mask[None, :],
                    other=0.0)
        scores = tl.dot(q, k, input_precision=DOT_PRECISION) * scale
        visible = key_valid[None, :] & (key_pos[None, :] <= position[:, None])
        if USE_WINDOW:
            visible = visible & ((position[:, None] - key_pos[None, :]) < sliding_window)
        scores = tl.where(visible, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        # A row with nothing visible yet keeps max -inf; subtracting 0 instead avoids inf - inf = nan.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(scores - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return m_i, l_i, acc
