"""Host-side planning for paged attention: tile shapes, grid size and the KV split count.

Everything is decided from sizes the host already knows (token count, sequence count, head counts, an
upper bound of the context length and the GPU's SM count passed in), so planning never reads a device
tensor, never queries the driver, and gives the same plan for every step of a fixed batch shape.

Split rule (after FlashAttention-3's ``num_splits`` heuristic): if the unsplit grid already fills
>= 80% of the SMs, do not split; otherwise take the smallest split count whose wave efficiency is
within 85% of the best, keeping at least ``MIN_TILES_PER_SPLIT`` KV tiles per split so the merge stays
cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._utils import MIN_DOT_K, cdiv, next_power_of_2

MAX_SPLITS = 16
MIN_TILES_PER_SPLIT = 2
FILL_NO_SPLIT = 0.8
EFFICIENCY_SLACK = 0.85
PREFILL_TILE = 32
DECODE_TILE = 16


@dataclass(frozen=True)
class AttentionPlan:
    """Launch parameters of one paged-attention call.

    ``group`` query heads share a KV head; a program computes ``block_m = block_q * group`` rows
    (``block_q`` tokens x the group) against ``tile`` keys at a time; the grid is
    ``(num_q_blocks, num_kv_heads[, num_splits])``.
    """

    group: int
    block_m: int
    block_q: int
    tile: int
    head_pad: int
    num_q_blocks: int
    num_splits: int


def query_block_shape(group: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_Q): rows per program (>= 16 for tl.dot) and query tokens per program."""
    block_m = max(MIN_DOT_K, next_power_of_2(group))
    return block_m, max(1, block_m // group)


def choose_num_splits(num_ctas: int, max_tiles: int, num_sms: int, max_splits: int = MAX_SPLITS) -> int:
    """Number of KV splits for ``num_ctas`` unsplit programs whose longest KV range is ``max_tiles`` tiles."""
    if num_ctas <= 0 or num_sms <= 0:
        raise ValueError(f"num_ctas ({num_ctas}) and num_sms ({num_sms}) must be positive")
    limit = min(max_splits, max(1, max_tiles // MIN_TILES_PER_SPLIT))
    if num_ctas >= FILL_NO_SPLIT * num_sms or limit == 1:
        return 1

    def wave_efficiency(splits: int) -> float:
        ctas = num_ctas * splits
        return ctas / (cdiv(ctas, num_sms) * num_sms)

    best = max(wave_efficiency(s) for s in range(1, limit + 1))
    return next(s for s in range(1, limit + 1) if wave_efficiency(s) >= EFFICIENCY_SLACK * best)


def plan_attention(
    num_tokens: int,
    num_seqs: int,
    num_heads: int,
    num_kv_heads: int,
    head_size: int,
    max_context_len: int,
    num_sms: int,
    num_splits: int | None = None,
) -> AttentionPlan:
    """Plan a call over ``num_tokens`` queries of ``num_seqs`` sequences (contexts <= ``max_context_len``).

    ``num_splits`` forces the split count (tests, benchmarks); by default ``choose_num_splits`` decides.
    """
    for name, value in (("num_tokens", num_tokens), ("num_seqs", num_seqs), ("num_kv_heads", num_kv_heads),
                        ("head_size", head_size), ("max_context_len", max_context_len), ("num_sms", num_sms)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    if num_splits is not None and num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    group = num_heads // num_kv_heads
    block_m, block_q = query_block_shape(group)
    decode_only = num_tokens == num_seqs
    tile = DECODE_TILE if decode_only else PREFILL_TILE
    # Programs that will find work: one per sequence in decode, about tokens / block_q otherwise.
    busy_blocks = num_seqs if decode_only else cdiv(num_tokens, block_q)
    if num_splits is None:
        num_splits = choose_num_splits(busy_blocks * num_kv_heads, cdiv(max_context_len, tile), num_sms)
    return AttentionPlan(
        group=group, block_m=block_m, block_q=block_q, tile=tile, head_pad=max(MIN_DOT_K, next_power_of_2(head_size)),
        num_q_blocks=num_tokens // block_q + num_seqs, num_splits=num_splits,
    )
