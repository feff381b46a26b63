"""Batched token sampling (greedy, temperature, top-k, top-p, min-p) without sorting the vocabulary.

Approach:
- Every filter keeps the tokens whose probability is at least a per-row threshold, so the filters
  combine into one threshold ``max(t_min_p, t_top_k, t_top_p)``:
  * min-p: ``min_p * max(p)``.
  * top-k: the k-th largest probability, read from ``torch.topk`` on at most ``max(k)`` candidates.
  * top-p (applied after top-k and min-p, on their renormalised mass ``M``): the largest t with
    ``sum(p >= t) >= top_p * M``. It is found by a cumulative sum over the sorted top-k candidates
    (at least ``PROBE_CANDIDATES``), which holds the nucleus for nearly every real distribution; rows
    whose nucleus is larger fall back to a bisection on t (each step one masked sum over the vocabulary).
  Ties at the threshold are all kept.
- The draw is an exponential race: ``argmax(p / E)`` with ``E ~ Exp(1)`` i.i.d. picks token i with
  probability ``p_i / sum(p)``, needs no normalisation and no cumulative sum, and lets every row with
  its own ``torch.Generator`` draw its ``E`` from it alone, so a seeded row's token does not depend on
  the rest of the batch.
- Rows with temperature 0 (below 1e-5) are greedy: argmax of the raw logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PROBE_CANDIDATES = 256
BISECTION_STEPS = 32
GREEDY_TEMPERATURE = 1e-5

Param = float | int | torch.Tensor


def _as_row_tensor(value: Param, name: str, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A per-row parameter as a ``[n]`` tensor; scalars are broadcast."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return value.to(device=device, dtype=dtype).expand(n)
        if value.shape != (n,):
            raise ValueError(f"{name} must be a scalar or a tensor of shape [{n}], got {tuple(value.shape)}")
        return value.to(device=device, dtype=dtype)
    return torch.full((n,), value, dtype=dtype, device=device)


def _check_range(t: torch.Tensor, name: str, low: float, high: float, low_open: bool = False) -> None:
    below = (t <= low) if low_open else (t < low)
    if bool((below | (t > high)).any()):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {t.tolist()}")


def _top_p_threshold(
    probs: torch.Tensor, floor: torch.Tensor, top_p: torch.Tensor, sorted_vals: torch.Tensor
) -> torch.Tensor:
    """Per-row threshold of the top-p nucleus of ``probs`` restricted to ``probs >= floor``."""
    kept_mass = torch.where(probs >= floor[:, None], probs, 0.0).sum(-1)
    target = top_p * kept_mass
    cand = torch.where(sorted_vals >= floor[:, None], sorted_vals, 0.0)
    crossing = (cand.cumsum(-1) < target[:, None]).sum(-1)  # index of the first candidate reaching target
    resolved = crossing < sorted_vals.shape[1]
    threshold = sorted_vals.gather(1, crossing.clamp(max=sorted_vals.shape[1] - 1)[:, None]).squeeze(1)
    if bool(resolved.all()):
        return threshold
    rows = (~resolved).nonzero().squeeze(1)
    row_probs = probs[rows]
    lo, hi = floor[rows].clone(), sorted_vals[rows, -1].clone()  # mass(lo) >= target > mass(hi)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) * 0.5
        enough = torch.where(row_probs >= mid[:, None], row_probs, 0.0).sum(-1) >= target[rows]
        lo = torch.where(enough, mid, lo)
        hi = torch.where(enough, hi, mid)
    threshold[rows] = lo
    return threshold


def keep_threshold(probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Per-row probability threshold combining min-p, top-k and then top-p (see the module doc)."""
    n, vocab = probs.shape
    threshold = min_p * probs.max(-1).values
    k_on = (top_k > 0) & (top_k < vocab)
    p_on = top_p < 1.0
    any_k, any_p = bool(k_on.any()), bool(p_on.any())
    if not (any_k or any_p):
        return threshold
    num_cand = int(top_k[k_on].max()) if any_k else 1
    if any_p:
        num_cand = max(num_cand, PROBE_CANDIDATES)
    sorted_vals = torch.topk(probs, min(num_cand, vocab), dim=-1, sorted=True).values
    if any_k:
        kth = sorted_vals.gather(1, (top_k.clamp(min=1, max=sorted_vals.shape[1]) - 1)[:, None]).squeeze(1)
        threshold = torch.where(k_on, torch.maximum(threshold, kth), threshold)
    if any_p:
        nucleus = _top_p_threshold(probs, threshold, top_p, sorted_vals)
        threshold = torch.where(p_on, torch.maximum(threshold, nucleus), threshold)
    return threshold


def _exponential_noise(
    like: torch.Tensor, generators: Sequence[torch.Generator | None] | None
) -> torch.Tensor:
    """i.i.d. Exp(1) noise shaped like ``like``; row i comes from ``generators[i]`` when it is set."""
    noise = torch.empty_like(like)
    if generators is None:
        return noise.exponential_()
    if len(generators) != like.shape[0]:
        raise ValueError(f"generators has {len(generators)} entries for {like.shape[0]} rows")
    unseeded = [i for i, g in enumerate(generators) if g is None]
    if unseeded:
        noise[unseeded] = torch.empty((len(unseeded), like.shape[1]), dtype=like.dtype, device=like.device).exponential_()
    for i, g in enumerate(generators):
        if g is not None:
            noise[i].exponential_(generator=g)
    return noise


def sample(
    logits: torch.Tensor,
    temperature: Param,
    top_k: Param,
    top_p: Param,
    min_p: Param,
    generators: Sequence[torch.Generator | None] | None = None,
) -> torch.Tensor:
    """Sample one token per row of ``logits [N, V]``; returns int64 ``[N]``.

    Parameters are scalars or per-row tensors: ``temperature`` >= 0 (0 = greedy), ``top_k`` (<= 0 or
    >= V disables it), ``top_p`` in (0, 1] (1 disables), ``min_p`` in [0, 1] (0 disables).
    ``generators[i]`` (optional, None entries allowed) makes row i's draw reproducible on its own.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [num_rows, vocab], got shape {tuple(logits.shape)}")
    n, device = logits.shape[0], logits.device
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    temp = _as_row_tensor(temperature, "temperature", n, dtype, device)
    top_k_t = _as_row_tensor(top_k, "top_k", n, torch.int64, device)
    top_p_t = _as_row_tensor(top_p, "top_p", n, dtype, device)
    min_p_t = _as_row_tensor(min_p, "min_p", n, dtype, device)
    _check_range(top_p_t, "top_p", 0.0, 1.0, low_open=True)
    _check_range(min_p_t, "min_p", 0.0, 1.0)
    if bool((temp < 0).any()):
        raise ValueError(f"temperature must be >= 0, got {temp.tolist()}")
    greedy_rows = temp < GREEDY_TEMPERATURE
    greedy = logits.argmax(-1)
    if bool(greedy_rows.all()):
        return greedy
    scaled = logits.to(dtype) / torch.where(greedy_rows, 1.0, temp)[:, None]
    probs = torch.softmax(scaled, dim=-1)
    threshold = keep_threshold(probs, top_k_t, top_p_t, min_p_t)
    probs = torch.where(probs >= threshold[:, None], probs, 0.0)
    noise = _exponential_noise(probs, generators).clamp_min_(torch.finfo(dtype).tiny)
    drawn = (probs / noise).argmax(-1)
    return torch.where(greedy_rows, greedy, drawn)
