"""Sampler: exact greedy paths, excluded tokens never drawn, seeded determinism, logprobs, input errors."""

from __future__ import annotations

import bastion.ops
import pytest
import torch
from bastion.sampling.params import SamplingParams
from bastion.sampling.sampler import Sampler
from bastion.sampling.state import SequenceState

from .sampling_helpers import make_states

VOCAB = 64


def _random_logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def test_all_greedy_is_argmax_without_calling_the_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_draw(*args, **kwargs):
        raise AssertionError("the all-greedy fast path must not call bastion.ops.sample")

    monkeypatch.setattr(bastion.ops, "sample", no_draw)
    logits = _random_logits(8)
    out = Sampler().sample(logits, make_states([SamplingParams(temperature=0.0)] * 8))
    assert out.token_ids.dtype == torch.int64
    assert torch.equal(out.token_ids, logits.argmax(-1))
    assert out.logprobs is None


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0, top_k=1),
        SamplingParams(temperature=1.5, top_p=1e-6),
        SamplingParams(temperature=1e-6, top_k=5),  # below the greedy threshold
    ],
    ids=["temperature0", "top_k1", "tiny_top_p", "tiny_temperature"],
)
def test_greedy_equivalents_are_argmax_in_a_mixed_batch(params: SamplingParams) -> None:
    logits = _random_logits(12, seed=1)
    # every other row samples freely, so the batch takes the full draw path
    states = make_states([params if i % 2 == 0 else SamplingParams(temperature=1.0) for i in range(12)])
    tokens = Sampler().sample(logits, states).token_ids
    assert torch.equal(tokens[0::2], logits[0::2].argmax(-1))


def test_excluded_tokens_are_never_drawn() -> None:
    torch.manual_seed(0)
    rows = 4000
    base = torch.zeros(VOCAB)
    base[VOCAB // 2 :] = float("-inf")  # zero probability
    logits = base.repeat(rows, 1)
    out = Sampler().sample(logits, make_states([SamplingParams(temperature=2.0)] * rows))
    assert int(out.token_ids.max()) < VOCAB // 2
    assert len(set(out.token_ids.tolist())) == VOCAB // 2  # every allowed token does occur


def test_top_k_and_min_p_exclusions_hold() -> None:
    torch.manual_seed(1)
    rows = 3000
    logits = torch.linspace(0, 4, VOCAB).repeat(rows, 1)  # token VOCAB-1 most likely
    top_k = Sampler().sample(logits, make_states([SamplingParams(top_k=3)] * rows)).token_ids
    assert set(top_k.tolist()) == {VOCAB - 1, VOCAB - 2, VOCAB - 3}
    probs = torch.softmax(logits[0], -1)
    allowed = set((probs >= 0.5 * probs.max()).nonzero().squeeze(1).tolist())
    min_p = Sampler().sample(logits, make_states([SamplingParams(min_p=0.5)] * rows)).token_ids
    assert set(min_p.tolist()) == allowed


def _generate(states: list[SequenceState], steps: int, row: int, seed: int) -> list[int]:
    """Run ``steps`` sampling steps over a batch, appending each token; return row ``row``'s tokens."""
    sampler = Sampler()
    step_logits = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        logits = torch.randn(len(states), VOCAB, generator=step_logits)
        logits[row] = torch.arange(VOCAB, dtype=torch.float32).sin() * 2  # the tracked request's logits
        for state, token in zip(states, sampler.sample(logits, states).token_ids.tolist(), strict=True):
            state.append(token)
    return states[row].output_token_ids


def test_seeded_request_is_independent_of_batch_and_position() -> None:
    seeded = SamplingParams(temperature=1.0, top_p=0.9, seed=1234)
    alone = _generate(make_states([seeded]), steps=6, row=0, seed=0)
    torch.manual_seed(99)  # the unseeded neighbours use the global RNG; that must not matter
    others = [SamplingParams(temperature=0.8), SamplingParams(temperature=0.0), SamplingParams(seed=5)]
    batch = make_states([others[0], others[1], seeded, others[2]])
    in_batch = _generate(batch, steps=6, row=2, seed=7)
    last = make_states([*others, seeded])
    at_end = _generate(last, steps=6, row=3, seed=8)
    assert alone == in_batch == at_end
    different_seed = _generate(make_states([SamplingParams(temperature=1.0, top_p=0.9, seed=4321)]), 6, 0, 0)
    assert different_seed != alone  # the seed really drives the draw


def test_logprobs_are_raw_log_softmax_with_top_n_and_rank() -> None:
    logits = _random_logits(3, seed=2)
    params = [
        SamplingParams(temperature=0.7, logprobs=5, repetition_penalty=1.8),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, logprobs=0),
    ]
    states = make_states(params, prompt_token_ids=list(range(VOCAB)))
    out = Sampler().sample(logits, states)
    expected = torch.log_softmax(logits, -1)  # raw: before penalties and temperature
    assert out.logprobs is not None and out.logprobs[1] is None
    first, third = out.logprobs[0], out.logprobs[2]
    assert first is not None and third is not None
    token = int(out.token_ids[0])
    assert first.token_id == token
    assert first.logprob == pytest.approx(float(expected[0, token]), abs=1e-6)
    assert first.rank == int((expected[0] > expected[0, token]).sum()) + 1
    top_values, top_ids = expected[0].topk(5)
    assert list(first.top_logprobs) == top_ids.tolist()  # most likely first
    assert list(first.top_logprobs.values()) == pytest.approx(top_values.tolist(), abs=1e-6)
    assert first[token] == first.logprob  # a {token_id: logprob} dict: the top 5 plus the sampled token
    assert len(first) == (5 if token in top_ids.tolist() else 6)
    assert list(first)[:5] == top_ids.tolist()
    assert third.top_logprobs == {} and third.rank == 1  # greedy: the chosen token is the most likely
    assert third == {int(logits[2].argmax()): pytest.approx(float(expected[2].max()), abs=1e-6)}


def test_logits_are_not_modified() -> None:
    logits = _random_logits(2, seed=3)
    before = logits.clone()
    states = make_states([SamplingParams(repetition_penalty=1.5, min_tokens=2)] * 2, [1, 2], eos_token_ids=[0])
    Sampler().sample(logits, states)
    assert torch.equal(logits, before)


def test_empty_batch_gives_empty_output() -> None:
    out = Sampler().sample(torch.empty(0, VOCAB), [])
    assert out.token_ids.shape == (0,) and out.logprobs is None


@pytest.mark.parametrize(
    ("logits", "num_states", "message"),
    [
        (torch.zeros(VOCAB), 1, "num_seqs, vocab_size"),
        (torch.zeros(2, VOCAB), 3, "2 rows for 3 sequence states"),
        (torch.zeros(1, VOCAB, dtype=torch.int64), 1, "floating-point"),
    ],
)
def test_bad_inputs_raise_clear_errors(logits: torch.Tensor, num_states: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Sampler().sample(logits, make_states([SamplingParams()] * num_states))


def test_state_keeps_its_generator_device() -> None:
    """(Params of the wrong type are refused once, by the engine's input processor: test_input_processor.)"""
    state = SequenceState(SamplingParams(seed=3), [1])
    generator = state.generator_for(torch.device("cpu"))
    assert generator is not None and state.generator_for(torch.device("cpu")) is generator
    assert SequenceState(SamplingParams(), [1]).generator_for(torch.device("cpu")) is None
