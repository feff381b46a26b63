"""Statistical check: token frequencies follow the temperature/top-k/min-p/top-p distribution.

Reference (vLLM's order, computed independently here with a sort): softmax(logits / T); keep the top k;
keep tokens with p >= min_p * max(p); then the smallest most-likely-first set whose renormalised mass
reaches top_p; renormalise. 40k draws of a 24-token vocabulary per case.
"""

from __future__ import annotations

import pytest
import torch
from bastion.sampling.params import SamplingParams
from bastion.sampling.sampler import Sampler

from .sampling_helpers import make_states

VOCAB = 24
DRAWS = 40_000
# distinct, well-spread logits so no top-p boundary sits on a tie or a knife edge
LOGITS = torch.linspace(-2.0, 2.5, VOCAB)[torch.randperm(VOCAB, generator=torch.Generator().manual_seed(0))]


def reference_probs(params: SamplingParams) -> torch.Tensor:
    """The distribution the sampler must draw from, built with a full sort."""
    probs = torch.softmax(LOGITS.double() / params.temperature, -1)
    order = probs.argsort(descending=True)
    keep = torch.ones(VOCAB, dtype=torch.bool)
    if params.top_k > 0:
        keep[order[params.top_k :]] = False
    keep &= probs >= params.min_p * probs.max()
    kept = torch.where(keep, probs, 0.0)
    sorted_kept = kept[order] / kept.sum()
    mass_before = sorted_kept.cumsum(0) - sorted_kept
    keep[order[mass_before >= params.top_p - 1e-12]] = False
    final = torch.where(keep, probs, 0.0)
    return final / final.sum()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.6),
        SamplingParams(temperature=1.3, top_k=6),
        SamplingParams(temperature=1.0, top_p=0.7),
        SamplingParams(temperature=0.9, min_p=0.2),
        SamplingParams(temperature=1.2, top_k=10, top_p=0.8, min_p=0.05),
    ],
    ids=["t1", "t0.6", "top_k", "top_p", "min_p", "combined"],
)
def test_frequencies_match_reference(params: SamplingParams) -> None:
    torch.manual_seed(1)
    logits = LOGITS.repeat(DRAWS, 1)
    tokens = Sampler().sample(logits, make_states([params]) * DRAWS).token_ids  # rows share one state
    freq = torch.bincount(tokens, minlength=VOCAB).double() / DRAWS
    expected = reference_probs(params)
    assert (freq[expected == 0] == 0).all(), "a token outside the kept set was drawn"
    # each frequency within 5 standard errors of its probability (plus a little slack for p ~ 0)
    tolerance = 5 * torch.sqrt(expected * (1 - expected) / DRAWS) + 1e-3
    assert ((freq - expected).abs() <= tolerance).all(), (freq - expected).abs().max()
    assert torch.nn.functional.cosine_similarity(freq, expected, dim=0) > 0.999
