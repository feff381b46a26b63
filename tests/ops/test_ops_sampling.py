"""sample: greedy, filters (against a full-sort reference), seeding, and the drawn distribution."""

from __future__ import annotations

import bastion.ops as ops
import pytest
import torch
from bastion.ops.sampling import WIDE_PROBE_CANDIDATES, keep_threshold


def _sorted_reference_mask(probs: torch.Tensor, top_k: int, top_p: float, min_p: float) -> torch.Tensor:
    """Kept tokens by the textbook full-sort method: min-p, then top-k, then top-p on the renormalised rest."""
    keep = probs >= min_p * probs.max(-1, keepdim=True).values
    vals, idx = probs.sort(-1, descending=True)
    ranks = torch.empty_like(idx).scatter_(-1, idx, torch.arange(probs.shape[-1]).expand_as(idx))
    if 0 < top_k < probs.shape[-1]:
        keep &= ranks < top_k
    if top_p < 1.0:
        kept_sorted = torch.where(keep.gather(-1, idx), vals, 0.0)
        mass_before = kept_sorted.cumsum(-1) - kept_sorted
        nucleus = mass_before < top_p * kept_sorted.sum(-1, keepdim=True)
        keep &= nucleus.gather(-1, ranks)
    return keep


def test_greedy_equals_argmax() -> None:
    logits = torch.randn(8, 1000)
    assert torch.equal(ops.sample(logits, 0.0, 0, 1.0, 0.0), logits.argmax(-1))


def test_top_k_one_equals_argmax() -> None:
    logits = torch.randn(64, 500)
    assert torch.equal(ops.sample(logits, 1.5, 1, 1.0, 0.0), logits.argmax(-1))


def test_mixed_greedy_and_random_rows() -> None:
    logits = torch.randn(4, 300)
    temperature = torch.tensor([0.0, 1.0, 0.0, 1.0])
    out = ops.sample(logits, temperature, torch.tensor([0, 2, 0, 1]), 1.0, 0.0)
    assert out[0] == logits[0].argmax() and out[2] == logits[2].argmax() and out[3] == logits[3].argmax()
    assert out[1] in logits[1].topk(2).indices


@pytest.mark.parametrize(("top_k", "top_p", "min_p"), [(0, 0.9, 0.0), (20, 0.5, 0.0), (0, 1.0, 0.1), (7, 1.0, 0.0),
                                                       (50, 0.8, 0.02), (0, 0.999, 0.0)])
@pytest.mark.parametrize("vocab", [40, 3000, 10000])
def test_keep_set_matches_full_sort(top_k: int, top_p: float, min_p: float, vocab: int) -> None:
    """Rows 2-5 are flat: their nucleus exceeds the first probe (3000) or both probes (10000: bisection)."""
    gen = torch.Generator().manual_seed(vocab + top_k)
    logits = torch.randn(6, vocab, generator=gen) * torch.tensor([4.0, 1.0, 0.3, 0.05, 2.0, 0.0])[:, None]
    probs = torch.softmax(logits.double(), -1)
    n = probs.shape[0]
    threshold = keep_threshold(probs, torch.full((n,), top_k), torch.full((n,), top_p, dtype=torch.float64),
                               torch.full((n,), min_p, dtype=torch.float64))
    ours = probs >= threshold[:, None]
    reference = _sorted_reference_mask(probs, top_k, top_p, min_p)
    if vocab > WIDE_PROBE_CANDIDATES and top_p >= 0.9 and top_k == 0:
        assert int(reference[3].sum()) > WIDE_PROBE_CANDIDATES, "the flat row must need the bisection path"
    # Differences may only be ties at the threshold (row 5 is uniform: all tokens tie and are kept) or
    # tokens within float rounding of it (the bisection's last step).
    differs = ours ^ reference
    assert torch.all((probs[differs] - threshold[differs.nonzero()[:, 0]]).abs() < 1e-9)
    assert int(differs[:5].sum()) <= 2
    assert torch.all(ours[5]) and not torch.any(differs & ~ours)


def test_zero_probability_tokens_never_chosen() -> None:
    logits = torch.randn(20000, 16)
    banned = torch.zeros(16, dtype=torch.bool)
    banned[[0, 3, 7, 15]] = True
    logits[:, banned] = float("-inf")
    out = ops.sample(logits, 2.0, 0, 1.0, 0.0)
    assert not banned[out].any()


def test_filtered_tokens_never_chosen() -> None:
    logits = torch.randn(1, 64).expand(5000, 64).contiguous()
    out = ops.sample(logits, 1.0, 5, 1.0, 0.0)
    assert set(out.tolist()) <= set(logits[0].topk(5).indices.tolist())


def test_seeded_rows_do_not_depend_on_the_batch() -> None:
    logits = torch.randn(6, 200)

    def draw(rows: list[int]) -> list[int]:
        generators = [torch.Generator().manual_seed(100 + r) if r % 2 == 0 else None for r in rows]
        return ops.sample(logits[rows], 1.0, 50, 0.95, 0.0, generators=generators).tolist()

    full = draw([0, 1, 2, 3, 4, 5])
    alone = [draw([r])[0] for r in (0, 2, 4)]
    reordered = draw([4, 3, 2, 1, 0])
    assert [full[0], full[2], full[4]] == alone
    assert [reordered[4], reordered[2], reordered[0]] == alone


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 1.0), (6, 1.0), (0, 0.7)])
def test_frequencies_follow_renormalised_probabilities(top_k: int, top_p: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(32) * 1.5
    draws = 100_000
    out = ops.sample(logits.expand(draws, 32).contiguous(), 0.8, top_k, top_p, 0.0)
    freq = torch.bincount(out, minlength=32).double() / draws
    probs = torch.softmax(logits.double() / 0.8, -1)
    target = torch.where(_sorted_reference_mask(probs[None], top_k, top_p, 0.0)[0], probs, 0.0)
    target /= target.sum()
    assert torch.nn.functional.cosine_similarity(freq, target, dim=0) > 0.99
    assert freq[target == 0].sum() == 0


def test_per_row_parameters_and_errors() -> None:
    logits = torch.randn(3, 50)
    out = ops.sample(logits, torch.tensor([0.0, 0.0, 0.0]), torch.tensor([3, 3, 3]), torch.tensor([0.5, 0.5, 0.5]),
                     torch.tensor([0.0, 0.1, 0.2]))
    assert torch.equal(out, logits.argmax(-1))
    with pytest.raises(ValueError, match="top_p must lie in"):
        ops.sample(logits, 1.0, 0, 0.0, 0.0)
    with pytest.raises(ValueError, match="min_p must lie in"):
        ops.sample(logits, 1.0, 0, 1.0, 1.5)
    with pytest.raises(ValueError, match=r"temperature must be a scalar or a tensor of shape \[3\]"):
        ops.sample(logits, torch.ones(2), 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="generators has 1 entries for 3 rows"):
        ops.sample(logits, 1.0, 0, 1.0, 0.0, generators=[None])
