"""Token sampling without sorting: greedy, temperature, min-p, top-k and top-p, one program per row.

Every filter keeps the tokens whose weight ``e = exp((logit - max) / T)`` (so max e = 1) is at least
a per-row threshold, applied in the order min-p, top-k, top-p (top-p over the mass that min-p and
top-k left), ties at the threshold kept: the semantics of ``bastion.ops.sampling``.

Thresholds are found by pivot rounds over the vocabulary instead of a sort: positive floats are
ordered like their bit patterns, so a round spreads NUM_PIVOTS pivots evenly (in bit space) between
the current bounds and one pass counts (or sums) the weights at or above each pivot. The condition
holds on a prefix of the pivots, which narrows the bounds 33x per round: at most 6 rounds for the
< 2^30 patterns of (0, 1], with O(NUM_PIVOTS) state per row and no extra memory.

The draw is an inverse-CDF pick with a uniform passed in from the host (so per-request generators
make a row's token independent of the rest of the batch): the first kept token whose running mass
exceeds ``u * kept_mass``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from bastion.sampling.params import GREEDY_TEMPERATURE

from ._utils import next_power_of_2

SMALLEST_NORMAL_FP32 = 1.1754943508222875e-38
MAX_BLOCK_V = 1024
# Pivots per pass over the vocabulary (a power of two for tl.arange); 32 cut the range 33x a round.
NUM_PIVOTS = 32


@triton.jit
def token_weights(logits_row_ptr, cols, vocab, row_max, inv_temp):
    """exp((logit - max) / T) for ``cols``; 0 for columns past the vocabulary and -inf logits."""
    mask = cols < vocab
    logits = tl.load(logits_row_ptr + cols, mask=mask, other=float("-inf")).to(tl.float32)
    return tl.where(mask, tl.exp((logits - row_max) * inv_temp), 0.0)


@triton.jit
def row_max_and_argmax(logits_row_ptr, vocab, BLOCK_V: tl.constexpr):
    """Largest logit of the row and its first index."""
    best = float("-inf")
    best_idx = 0
    for start in range(0, vocab, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        logits = tl.load(logits_row_ptr + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
        chunk_max = tl.max(logits, 0)
        chunk_idx = tl.min(tl.where(logits == chunk_max, cols, vocab), 0)
        if chunk_max > best:  # strict: an equal later chunk keeps the first index
            best = chunk_max
            best_idx = chunk_idx
    return best, best_idx


@triton.jit
def count_and_mass(logits_row_ptr, vocab, row_max, inv_temp, threshold, BLOCK_V: tl.constexpr):
    """Number and total weight of the tokens whose weight is >= ``threshold``."""
    count = 0
    mass = 0.0
    for start in range(0, vocab, BLOCK_V):
        weights = token_weights(logits_row_ptr, start + tl.arange(0, BLOCK_V), vocab, row_max, inv_temp)
        kept = weights >= threshold
        count += tl.sum(kept.to(tl.int32), 0)
        mass += tl.sum(tl.where(kept, weights, 0.0), 0)
    return count, mass


@triton.jit
def stat_at_pivots(logits_row_ptr, vocab, row_max, inv_temp, pivots, USE_MASS: tl.constexpr,
                   BLOCK_V: tl.constexpr):
    """For every pivot at once, the mass (USE_MASS) or the count of the weights >= pivot."""
    stat = tl.zeros(pivots.shape, tl.float32)
    for start in range(0, vocab, BLOCK_V):
        weights = token_weights(logits_row_ptr, start + tl.arange(0, BLOCK_V), vocab, row_max, inv_temp)[None, :]
        at_least = weights >= pivots[:, None]
        if USE_MASS:
            stat += tl.sum(tl.where(at_least, weights, 0.0), 1)
        else:
            stat += tl.sum(at_least.to(tl.float32), 1)
    return stat


@triton.jit
def largest_threshold(logits_row_ptr, vocab, row_max, inv_temp, low, target, USE_MASS: tl.constexpr,
                      NUM_PIVOTS: tl.constexpr, BLOCK_V: tl.constexpr):
    """Largest float t >= ``low`` such that the count (or mass) of weights >= t is still >= ``target``.

    ``low`` must meet the condition; 1.0 + 1 ulp (above the max weight) never does. Each round
    places NUM_PIVOTS pivots evenly (in bit space) strictly between the bounds and evaluates them all
    in one pass; the condition holds on a prefix of them, which gives the new bounds.
    """
    low_bits = low.to(tl.int32, bitcast=True)
    fail_bits = tl.full([], 1.0, tl.float32).to(tl.int32, bitcast=True) + 1
    steps = tl.arange(0, NUM_PIVOTS) + 1
    while fail_bits - low_bits > 1:
        span = (fail_bits - low_bits).to(tl.int64)
        # pivot i sits at low + ceil(i * span / (P + 1)): strictly inside (low, fail) while span > 1
        pivot_bits = low_bits + ((span * steps + NUM_PIVOTS) // (NUM_PIVOTS + 1)).to(tl.int32)
        stat = stat_at_pivots(logits_row_ptr, vocab, row_max, inv_temp, pivot_bits.to(tl.float32, bitcast=True),
                              USE_MASS, BLOCK_V)
        num_enough = tl.sum((stat >= target).to(tl.int32), 0)
        base_bits = low_bits
        if num_enough > 0:
            low_bits = base_bits + ((span * num_enough + NUM_PIVOTS) // (NUM_PIVOTS + 1)).to(tl.int32)
        if num_enough < NUM_PIVOTS:
            fail_bits = base_bits + ((span * (num_enough + 1) + NUM_PIVOTS) // (NUM_PIVOTS + 1)).to(tl.int32)
    return low_bits.to(tl.float32, bitcast=True)


@triton.jit
def draw_token(logits_row_ptr, vocab, row_max, inv_temp, threshold, target, BLOCK_V: tl.constexpr):
    """First kept column whose running kept mass exceeds ``target``; the last kept one if rounding ran out."""
    running = 0.0
    chosen = -1
    last_kept = -1
    for start in range(0, vocab, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        weights = token_weights(logits_row_ptr, cols, vocab, row_max, inv_temp)
        kept = weights >= threshold
        kept_weights = tl.where(kept, weights, 0.0)
        hit = kept & ((tl.cumsum(kept_weights, 0) + running) > target)
        first_hit = tl.min(tl.where(hit, cols, vocab), 0)
        if (chosen < 0) & (first_hit < vocab):
            chosen = first_hit
        last_kept = tl.maximum(last_kept, tl.max(tl.where(kept, cols, -1), 0))
        running += tl.sum(kept_weights, 0)
    return tl.where(chosen < 0, last_kept, chosen)


@triton.jit
def sample_kernel(
    out_ptr, logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr, uniform_ptr, vocab, stride_logits,
    GREEDY_BELOW: tl.constexpr, MIN_WEIGHT: tl.constexpr, NUM_PIVOTS: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """One row: greedy argmax, or threshold search (min-p, top-k, top-p) then an inverse-CDF draw."""
    row = tl.program_id(0).to(tl.int64)
    logits_row_ptr = logits_ptr + row * stride_logits
    row_max, argmax = row_max_and_argmax(logits_row_ptr, vocab, BLOCK_V)
    temperature = tl.load(temperature_ptr + row)
    # A row with every logit -inf has no distribution: return its argmax (0) rather than garbage.
    if (temperature < GREEDY_BELOW) | (row_max == float("-inf")):
        tl.store(out_ptr + row, argmax.to(tl.int64))
        return
    inv_temp = 1.0 / temperature
    # min-p: weights are relative to the max already; MIN_WEIGHT drops underflowed (zero) weights.
    floor = tl.maximum(tl.load(min_p_ptr + row), MIN_WEIGHT)
    threshold = floor
    kept_count, kept_mass = count_and_mass(logits_row_ptr, vocab, row_max, inv_temp, threshold, BLOCK_V)
    top_k = tl.load(top_k_ptr + row)
    if (top_k > 0) & (top_k < kept_count):
        threshold = largest_threshold(logits_row_ptr, vocab, row_max, inv_temp, threshold, top_k, False,
                                      NUM_PIVOTS, BLOCK_V)
        kept_count, kept_mass = count_and_mass(logits_row_ptr, vocab, row_max, inv_temp, threshold, BLOCK_V)
    top_p = tl.load(top_p_ptr + row)
    if top_p < 1.0:
        threshold = largest_threshold(logits_row_ptr, vocab, row_max, inv_temp, threshold, top_p * kept_mass, True,
                                      NUM_PIVOTS, BLOCK_V)
        kept_count, kept_mass = count_and_mass(logits_row_ptr, vocab, row_max, inv_temp, threshold, BLOCK_V)
    target = tl.load(uniform_ptr + row) * kept_mass
    token = draw_token(logits_row_ptr, vocab, row_max, inv_temp, threshold, target, BLOCK_V)
    tl.store(out_ptr + row, token.to(tl.int64))


def _per_row(value: float | int | torch.Tensor, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scalar or ``[n]`` parameter as a contiguous ``[n]`` tensor the kernel can index."""
    return torch.as_tensor(value, device=device).to(dtype).expand(n).contiguous()


def host_uniforms(n: int, generators: Sequence[torch.Generator | None] | None, device: torch.device) -> torch.Tensor:
    """One U[0, 1) per row; row i comes from ``generators[i]`` alone when that is set."""
    uniforms = torch.rand(n, dtype=torch.float32, device=device)
    for i, generator in enumerate(generators or ()):
        if generator is not None:
            uniforms[i : i + 1] = torch.rand(1, generator=generator, device=generator.device)
    return uniforms


def sample(
    logits: torch.Tensor,
    temperature: float | torch.Tensor,
    top_k: int | torch.Tensor,
    top_p: float | torch.Tensor,
    min_p: float | torch.Tensor,
    generators: Sequence[torch.Generator | None] | None = None,
    *,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row of ``logits [N, V]`` (int64 ``[N]``); parameters are scalars or ``[N]`` tensors.

    temperature < 1e-5 is greedy; top_k <= 0 or >= V, top_p = 1 and min_p = 0 disable their filter.
    ``uniforms [N]`` in [0, 1) replaces the host draw (``generators`` is then unused): row i picks the
    kept token whose CDF interval holds ``uniforms[i]``. Inputs are assumed valid (the ops adapter
    validates); logits need a contiguous last dim.
    """
    n, vocab = logits.shape
    device = logits.device
    out = torch.empty(n, dtype=torch.int64, device=device)
    if n == 0:
        return out
    sample_kernel[(n,)](
        out, logits, _per_row(temperature, n, torch.float32, device), _per_row(top_k, n, torch.int32, device),
        _per_row(top_p, n, torch.float32, device), _per_row(min_p, n, torch.float32, device),
        host_uniforms(n, generators, device) if uniforms is None else uniforms.to(device, torch.float32).contiguous(),
        vocab, logits.stride(0),
        GREEDY_BELOW=GREEDY_TEMPERATURE, MIN_WEIGHT=SMALLEST_NORMAL_FP32, NUM_PIVOTS=NUM_PIVOTS,
        BLOCK_V=min(MAX_BLOCK_V, next_power_of_2(vocab)),
    )
    return out
