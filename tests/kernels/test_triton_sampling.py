"""Sort-free sampling kernel: greedy, exact kept sets and CDF mapping, seeds, statistics, validation."""

from __future__ import annotations

import pytest
import torch
from bastion import kernels
from bastion import ops as bops
from bastion.ops.sampling import keep_threshold


def _logits(rows: int, vocab: int, seed: int, device: torch.device | str, spread: float = 2.0) -> torch.Tensor:
    return (torch.randn((rows, vocab), generator=torch.Generator().manual_seed(seed)) * spread).to(device)


def test_greedy_rows_take_the_first_argmax_across_vocab_chunks(device):
    logits = _logits(3, 1500, 0, device)  # 1500 > the 1024-wide block: two chunks
    logits[0, 1200] = 50.0  # max in the second chunk
    logits[1, 7] = logits[1, 1100] = 60.0  # tie across chunks: the first index wins
    logits[2, 1024] = logits[2, 1025] = 70.0  # tie inside a chunk
    tokens = kernels.sample(logits, 0.0, 0, 1.0, 0.0)
    assert tokens.dtype == torch.int64
    assert tokens.tolist() == [1200, 7, 1024]


# (temperature, top_k, top_p, min_p, vocab): every filter alone and combined; top_k >= V disables it.
FILTER_CASES = [
    (1.0, 0, 1.0, 0.0, 20),
    (0.7, 5, 1.0, 0.0, 40),
    (1.3, 0, 0.8, 0.0, 40),
    (1.0, 0, 1.0, 0.2, 40),
    (1.0, 3, 0.5, 0.1, 40),
    (2.0, 60, 0.9, 0.05, 40),
    (1.0, 4, 1.0, 0.0, 1500),
]


@pytest.mark.parametrize("case", FILTER_CASES, ids=[f"T{c[0]}-k{c[1]}-p{c[2]}-minp{c[3]}-V{c[4]}" for c in FILTER_CASES])
def test_kept_set_and_cdf_mapping_are_exact(case, device):
    temperature, top_k, top_p, min_p, vocab = case
    logits = _logits(1, vocab, seed=vocab + top_k, device=device)
    probs = torch.softmax(logits.double().cpu() / temperature, -1)
    threshold = keep_threshold(probs, torch.tensor([top_k]), torch.tensor([top_p], dtype=torch.float64),
                               torch.tensor([min_p], dtype=torch.float64))
    floor = 0.0 if threshold is None else threshold[0].item()  # None: no filter active
    kept = ((probs[0] >= floor) & (probs[0] > 0)).nonzero().flatten()
    kept_probs = probs[0, kept] / probs[0, kept].sum()
    cdf = torch.cumsum(kept_probs, 0)
    midpoints = (cdf - kept_probs / 2).float()  # the middle of each kept token's CDF interval
    rows = len(kept)
    tokens = kernels.sample(logits.expand(rows, vocab).contiguous(), temperature, top_k, top_p, min_p,
                            uniforms=midpoints)
    assert tokens.tolist() == kept.tolist()


def test_zero_probability_tokens_are_never_drawn(device):
    logits = _logits(1, 16, seed=3, device=device)
    logits[0, ::2] = float("-inf")  # e.g. masked by a grammar
    uniforms = torch.tensor([0.0, 1e-7, 0.5, 0.9999999, 0.99999994])
    tokens = kernels.sample(logits.expand(5, 16).contiguous(), 1.0, 0, 1.0, 0.0, uniforms=uniforms)
    assert all(t % 2 == 1 for t in tokens.tolist())
    assert tokens[0].item() == 1 and tokens[-1].item() == 15  # the CDF ends map to the first/last kept token


def test_a_row_of_only_minus_inf_logits_yields_a_valid_index(device):
    logits = torch.full((2, 10), float("-inf"), device=device)
    logits[1, 6] = 0.0
    assert kernels.sample(logits, 1.0, 3, 0.9, 0.0, uniforms=torch.tensor([0.5, 0.5])).tolist() == [0, 6]


def test_seeded_row_draw_does_not_depend_on_the_rest_of_the_batch(device):
    logits = _logits(3, 32, seed=4, device=device, spread=0.5)

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(1234)

    in_batch = kernels.sample(logits, 1.0, 0, 1.0, 0.0, generators=[None, seeded(), None])
    alone = kernels.sample(logits[1:2].contiguous(), 1.0, 0, 1.0, 0.0, generators=[seeded()])
    assert in_batch[1].item() == alone[0].item()
    u = torch.rand(1, generator=seeded())
    assert kernels.sample(logits[1:2].contiguous(), 1.0, 0, 1.0, 0.0, uniforms=u).item() == alone[0].item()


def test_draw_frequencies_follow_the_distribution_with_host_uniforms(device):
    # No filters (the exact CDF test covers them): keeps the 400 interpreted rows cheap.
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.5, float("-inf"), 0.0, -0.5, float("-inf")]], device=device)
    draws = 400
    tokens = kernels.sample(logits.expand(draws, 8).contiguous(), 1.0, 0, 1.0, 0.0)
    probs = torch.softmax(logits[0].double().cpu(), -1)
    freq = torch.bincount(tokens.cpu(), minlength=8).double() / draws
    sigma = (probs * (1 - probs) / draws).sqrt()
    assert ((freq - probs).abs() <= 5 * sigma).all(), (freq, probs)
    assert freq[4] == 0 and freq[7] == 0


def test_ops_sample_on_triton_matches_torch_for_greedy_and_fully_filtered_rows(device):
    logits = _logits(4, 50, seed=5, device=device)
    temperature = torch.tensor([0.0, 0.0, 1.0, 0.8])
    top_k = torch.tensor([0, 0, 1, 0])  # top_k=1 and top_p tiny leave only the argmax
    top_p = torch.tensor([1.0, 1.0, 1.0, 1e-6])
    triton_tokens = bops.sample(logits, temperature, top_k, top_p, 0.0, backend="triton")
    torch_tokens = bops.sample(logits, temperature, top_k, top_p, 0.0, backend="torch")
    assert torch.equal(triton_tokens, torch_tokens)
    assert torch.equal(triton_tokens, logits.argmax(-1))


def test_seeded_filtered_rows_draw_the_same_token_on_triton_and_torch_backends(device):
    logits = _logits(6, 64, seed=7, device=device, spread=1.0)
    params = {"temperature": torch.tensor([1.0, 0.8, 1.2, 1.0, 0.0, 1.5]), "top_k": torch.tensor([0, 10, 0, 5, 0, 20]),
              "top_p": torch.tensor([1.0, 1.0, 0.9, 0.7, 1.0, 0.95]), "min_p": torch.tensor([0.0, 0.0, 0.0, 0.1, 0.0, 0.02])}

    def seeded() -> list[torch.Generator]:
        return [torch.Generator(device=device).manual_seed(100 + i) for i in range(6)]

    triton_tokens = bops.sample(logits, **params, generators=seeded(), backend="triton")
    torch_tokens = bops.sample(logits, **params, generators=seeded(), backend="torch")
    assert torch.equal(triton_tokens, torch_tokens)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 0.0}, "top_p"),
        ({"min_p": 1.5}, "min_p"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": torch.tensor([1, 2, 3])}, "top_k"),
        ({"generators": [None]}, "generators"),
    ],
)
def test_triton_sample_rejects_bad_parameters(kwargs, message):
    args = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "generators": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        bops.sample(_logits(2, 8, seed=6, device="cpu"), **args, backend="triton")
