"""apply_token_bitmask: every backend against a bit-by-bit oracle, and sampling under a mask on every backend."""

from __future__ import annotations

import bastion.ops as ops
import pytest
import torch

BACKENDS = ["torch", "cpu", "triton"]  # triton runs under the interpreter on a CPU-only host (tests/conftest.py)


def _oracle(logits: torch.Tensor, bitmask: torch.Tensor, indices: list[int] | None) -> torch.Tensor:
    """-inf wherever bit v % 32 of word v // 32 is 0, written one column at a time."""
    out = logits.clone()
    rows = range(bitmask.shape[0]) if indices is None else indices
    for r, row in enumerate(rows):
        for v in range(logits.shape[1]):
            word = v // 32
            allowed = word < bitmask.shape[1] and (int(bitmask[r, word]) >> (v % 32)) & 1
            if not allowed:
                out[row, v] = float("-inf")
    return out


def _random_bitmask(rows: int, words: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.randint(-(2**31), 2**31 - 1, (rows, words), generator=gen, dtype=torch.int64).to(torch.int32)
    mask[0, 0] = -1  # all 32 allowed
    if words > 1:
        mask[0, 1] = 0  # none allowed
    return mask


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("vocab", "words"), [(64, 2), (100, 4), (100, 3), (333, 11)],
                         ids=["exact", "wider-mask", "narrower-mask", "odd"])
def test_matches_bit_by_bit_oracle(backend: str, vocab: int, words: int) -> None:
    logits = torch.randn(5, vocab)
    bitmask = _random_bitmask(5, words, seed=vocab + words)
    expected = _oracle(logits, bitmask, None)
    ops.apply_token_bitmask(logits, bitmask, backend=backend)
    assert torch.equal(logits, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_indexed_rows_leave_the_others_alone(backend: str) -> None:
    logits = torch.randn(6, 200)
    before = logits.clone()
    bitmask = _random_bitmask(3, 7, seed=1)
    indices = [4, 0, 2]
    ops.apply_token_bitmask(logits, bitmask, torch.tensor(indices), backend=backend)
    assert torch.equal(logits, _oracle(before, bitmask, indices))
    for free in (1, 3, 5):
        assert torch.equal(logits[free], before[free])


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits(backend: str, dtype: torch.dtype) -> None:
    logits = torch.randn(3, 96).to(dtype)
    bitmask = _random_bitmask(3, 3, seed=2)
    expected = _oracle(logits.float(), bitmask, None)
    ops.apply_token_bitmask(logits, bitmask, backend=backend)
    assert torch.equal(logits.float(), expected)


def test_cpu_backend_large_batch_matches_torch() -> None:
    """SmolLM2's vocabulary at batch 64: the vectorised C++ path against the reference."""
    logits = torch.randn(64, 49152)
    bitmask = _random_bitmask(64, 1536, seed=3)
    bitmask[5] = -1
    bitmask[6] = 0
    a, b = logits.clone(), logits.clone()
    ops.apply_token_bitmask(a, bitmask, backend="cpu")
    ops.apply_token_bitmask(b, bitmask, backend="torch")
    assert torch.equal(a, b)
    assert torch.equal(a[5], logits[5]) and bool(torch.isneginf(a[6]).all())


@pytest.mark.parametrize("bad", ["dtype", "rows", "indices", "dims"])
def test_bad_arguments_name_the_problem(bad: str) -> None:
    logits, bitmask, indices = torch.randn(4, 64), torch.zeros(4, 2, dtype=torch.int32), None
    if bad == "dtype":
        bitmask = bitmask.long()
    elif bad == "rows":
        bitmask = bitmask[:3]
    elif bad == "indices":
        indices = torch.tensor([0, 1])
    else:
        logits = logits[0]
    with pytest.raises(ValueError, match="bitmask|indices|logits"):
        ops.apply_token_bitmask(logits, bitmask, indices)


def _allowed_mask(vocab: int, allowed: list[list[int]]) -> torch.Tensor:
    words = (vocab + 31) // 32
    bitmask = torch.zeros(len(allowed), words, dtype=torch.int64)
    for r, ids in enumerate(allowed):
        for t in ids:
            bitmask[r, t // 32] |= 1 << (t % 32)
    return torch.where(bitmask >= 2**31, bitmask - 2**32, bitmask).to(torch.int32)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(("temperature", "top_k", "top_p", "min_p"),
                         [(0.0, 0, 1.0, 0.0), (1.0, 0, 1.0, 0.0), (0.7, 5, 1.0, 0.0), (1.3, 0, 0.8, 0.0),
                          (1.0, 0, 1.0, 0.2), (2.0, 3, 0.9, 0.05)])
def test_sampling_under_a_mask_draws_only_allowed_tokens(backend: str, temperature: float, top_k: int, top_p: float,
                                                         min_p: float) -> None:
    vocab, rows = 500, 64
    gen = torch.Generator().manual_seed(7)
    allowed = [sorted(torch.randperm(vocab, generator=gen)[: 1 + r % 9].tolist()) for r in range(rows)]
    logits = torch.randn(rows, vocab, generator=gen) * 3
    ops.apply_token_bitmask(logits, _allowed_mask(vocab, allowed), backend=backend)
    tokens = ops.sample(logits, temperature, top_k, top_p, min_p, backend=backend).tolist()
    for r, token in enumerate(tokens):
        assert token in allowed[r]
    if temperature == 0.0:
        assert tokens == logits.argmax(-1).tolist()  # the best allowed token


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_masked_distribution_is_the_renormalised_model_distribution(backend: str) -> None:
    """Many draws of one masked row: frequencies follow softmax over the allowed tokens only."""
    vocab, draws = 64, 4000
    allowed = [3, 17, 40, 41]
    base = torch.randn(vocab, generator=torch.Generator().manual_seed(3))
    logits = base.expand(draws, vocab).clone()
    ops.apply_token_bitmask(logits, _allowed_mask(vocab, [allowed] * draws), backend=backend)
    gens = [torch.Generator().manual_seed(i) for i in range(draws)]
    tokens = ops.sample(logits, 1.0, 0, 1.0, 0.0, gens, backend=backend)
    counts = torch.bincount(tokens, minlength=vocab).double() / draws
    expected = torch.softmax(base[allowed].double(), -1)
    assert counts[allowed].sum() == 1.0
    torch.testing.assert_close(counts[allowed], expected, atol=0.035, rtol=0)
