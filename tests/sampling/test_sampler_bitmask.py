"""Sampler under a grammar's token bitmask: every sampling parameter keeps working, logprobs follow the
masked distribution, unconstrained rows are untouched, and a grammar that can only end wins over min_tokens."""

from __future__ import annotations

import pytest
import torch
from bastion.sampling.params import SamplingParams
from bastion.sampling.sampler import Sampler
from bastion.sampling.state import SequenceState
from bastion.sampling.token_bitmask import TokenBitmask

from .sampling_helpers import make_states

VOCAB = 96
EOS = 5


def _bitmask(allowed: list[list[int]], rows: list[int]) -> TokenBitmask:
    words = torch.zeros(len(allowed), (VOCAB + 31) // 32, dtype=torch.int64)
    for r, ids in enumerate(allowed):
        for t in ids:
            words[r, t // 32] |= 1 << (t % 32)
    packed = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return TokenBitmask(packed, torch.tensor(rows, dtype=torch.int64))


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


ALLOWED = [7, 8, 30, 31, 32, 64, 95]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.0),
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=0.8, top_k=2),
    SamplingParams(temperature=1.2, top_p=0.5),
    SamplingParams(temperature=1.0, min_p=0.3),
    SamplingParams(temperature=1.0, repetition_penalty=1.5, presence_penalty=1.0, frequency_penalty=0.5),
    SamplingParams(temperature=1.0, seed=11),
], ids=["greedy", "temperature", "top_k", "top_p", "min_p", "penalties", "seed"])
def test_every_parameter_draws_only_allowed_tokens(backend: str, params: SamplingParams) -> None:
    rows = 32
    logits = _logits(rows)
    states = [SequenceState(params, prompt_token_ids=[7, 30, 64]) for _ in range(rows)]
    for state in states:
        state.append(31)
    out = Sampler(backend=backend).sample(logits, states, _bitmask([ALLOWED] * rows, list(range(rows))))
    assert set(out.token_ids.tolist()) <= set(ALLOWED)
    if params.is_greedy:
        masked = torch.full_like(logits, float("-inf"))
        masked[:, ALLOWED] = logits[:, ALLOWED]
        assert torch.equal(out.token_ids, masked.argmax(-1))


def test_top_k_counts_only_allowed_tokens() -> None:
    """top_k=2 under a mask keeps the two best ALLOWED tokens (the mask comes before the filters)."""
    logits = _logits(1).repeat(3000, 1)
    out = Sampler().sample(logits, make_states([SamplingParams(temperature=1.0, top_k=2)] * 3000),
                           _bitmask([ALLOWED] * 3000, list(range(3000))))
    best_two = set(torch.tensor(ALLOWED)[logits[0, ALLOWED].topk(2).indices].tolist())
    assert set(out.token_ids.tolist()) == best_two


def test_seeded_row_draws_the_same_token_whatever_the_batch() -> None:
    logits = _logits(6, seed=2)
    seeded = SamplingParams(temperature=1.0, seed=123)
    alone = Sampler().sample(logits[2:3], [SequenceState(seeded, [])], _bitmask([ALLOWED], [0])).token_ids
    states = make_states([SamplingParams(temperature=1.0)] * 6)
    states[2] = SequenceState(seeded, [])
    batch = Sampler().sample(logits, states, _bitmask([ALLOWED, ALLOWED], [2, 4])).token_ids
    assert batch[2] == alone[0]


def test_unconstrained_rows_are_untouched_and_logits_unmodified() -> None:
    logits = _logits(4, seed=3)
    before = logits.clone()
    out = Sampler().sample(logits, make_states([SamplingParams(temperature=0.0, logprobs=3)] * 4),
                           _bitmask([[9]], [1]))
    assert torch.equal(logits, before)
    assert out.token_ids[1] == 9
    for r in (0, 2, 3):
        assert out.token_ids[r] == before[r].argmax()
        assert out.logprobs is not None
        raw = torch.log_softmax(before[r], -1)
        assert out.logprobs[r].logprob == pytest.approx(float(raw[out.token_ids[r]]), abs=1e-5)


def test_logprobs_of_a_constrained_row_are_the_masked_distribution() -> None:
    logits = _logits(1, seed=4)
    out = Sampler().sample(logits, make_states([SamplingParams(temperature=1.0, logprobs=5, seed=1)]),
                           _bitmask([ALLOWED], [0]))
    lp = out.logprobs[0]
    masked = torch.full_like(logits[0], float("-inf"))
    masked[ALLOWED] = logits[0, ALLOWED]
    expected = torch.log_softmax(masked, -1)
    assert lp.logprob == pytest.approx(float(expected[lp.token_id]), abs=1e-5)
    assert set(lp.top_logprobs) <= set(ALLOWED) and len(lp.top_logprobs) == 5
    assert sum(torch.tensor(list(lp.top_logprobs.values())).exp()) <= 1.0 + 1e-5
    assert lp.rank == 1 + int((expected > expected[lp.token_id]).sum())


def test_a_grammar_that_can_only_end_wins_over_min_tokens() -> None:
    params = SamplingParams(temperature=1.0, min_tokens=10, max_tokens=20)
    states = make_states([params, params], eos_token_ids=[EOS])
    # row 0: the grammar allows only eos (it has ended); row 1: eos or 40
    out = Sampler().sample(_logits(2, seed=5), states, _bitmask([[EOS], [EOS, 40]], [0, 1]))
    assert out.token_ids.tolist() == [EOS, 40]  # row 1 keeps min_tokens: eos masked, 40 left


def test_an_empty_bitmask_is_no_constraint() -> None:
    logits = _logits(3, seed=6)
    empty = TokenBitmask(torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, dtype=torch.int64))
    out = Sampler().sample(logits, make_states([SamplingParams(temperature=0.0)] * 3), empty)
    assert torch.equal(out.token_ids, logits.argmax(-1))


def test_token_bitmask_checks_its_shapes() -> None:
    with pytest.raises(ValueError, match="int32"):
        TokenBitmask(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="rows"):
        TokenBitmask(torch.zeros(2, 3, dtype=torch.int32), torch.zeros(3, dtype=torch.int64))
