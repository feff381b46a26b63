"""Token bitmask: set the logits of tokens a grammar forbids to -inf, in place (structured outputs).

Bit ``v % 32`` of word ``v // 32`` of a row's int32 bitmask is 1 when token ``v`` is allowed (the
layout llguidance and xgrammar fill). Columns past the bitmask's ``32 * words`` are forbidden too.
One program masks ``BLOCK`` columns of one row; ``indices`` maps bitmask row r to logits row
``indices[r]`` so only the constrained rows of a batch are touched.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def apply_token_bitmask_kernel(logits_ptr, bitmask_ptr, indices_ptr, vocab, num_words, stride_logits,
                               stride_bitmask, HAS_INDICES: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (masked rows, cdiv(vocab, BLOCK)); writes -inf where the token's bit is 0."""
    r = tl.program_id(0)
    if HAS_INDICES:
        row = tl.load(indices_ptr + r).to(tl.int64)
    else:
        row = r.to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_vocab = cols < vocab
    words = cols // 32
    packed = tl.load(bitmask_ptr + r.to(tl.int64) * stride_bitmask + words,
                     mask=in_vocab & (words < num_words), other=0)
    allowed = ((packed >> (cols % 32)) & 1) != 0
    neg_inf = tl.full([BLOCK], float("-inf"), tl.float32).to(logits_ptr.dtype.element_ty)
    tl.store(logits_ptr + row * stride_logits + cols, neg_inf, mask=in_vocab & (~allowed))


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, indices: torch.Tensor | None = None) -> None:
    """Mask ``logits [N, V]`` in place by ``bitmask [R, ceil(V/32)]`` int32 (rows ``indices [R]``, or all)."""
    rows = bitmask.shape[0]
    vocab = logits.shape[1]
    if rows == 0 or vocab == 0:
        return
    bitmask = bitmask.contiguous()
    grid = (rows, triton.cdiv(vocab, BLOCK))
    idx = indices.contiguous() if indices is not None else bitmask  # any pointer when HAS_INDICES is off
    apply_token_bitmask_kernel[grid](logits, bitmask, idx, vocab, bitmask.shape[1], logits.stride(0),
                                     bitmask.stride(0), HAS_INDICES=indices is not None, BLOCK=BLOCK)
