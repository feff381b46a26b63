"""Penalties against hand-computed values, the incremental counts, and the min_tokens mask."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from bastion.sampling.params import SamplingParams
from bastion.sampling.penalties import apply_penalties, mask_stop_tokens_below_min
from bastion.sampling.sampler import Sampler
from bastion.sampling.state import SequenceState
from bastion.sampling.token_counts import TokenCounts

from .sampling_helpers import make_states

LOGITS = [2.0, -1.0, 0.5, 3.0, -2.0, 0.0]
PROMPT = [0, 4]
OUTPUT = [3, 3, 1]
PENALTIES = SamplingParams(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)
# by hand: token 0 in prompt (2/2); 1 generated once (-1*2 - 0.5*1 - 0.25); 2 unseen; 3 generated twice
# (3/2 - 0.5*2 - 0.25); 4 in prompt, negative (-2*2); 5 unseen
EXPECTED = [1.0, -2.75, 0.5, 0.25, -4.0, 0.0]


def _state_with_output(params: SamplingParams, output: list[int]) -> SequenceState:
    state = SequenceState(params, PROMPT)
    for token in output:
        state.append(token)
    return state


def test_penalties_match_hand_computed_values() -> None:
    logits = torch.tensor([LOGITS, LOGITS])
    states = [_state_with_output(PENALTIES, OUTPUT), _state_with_output(SamplingParams(), OUTPUT)]
    apply_penalties(logits, states)
    assert logits[0].tolist() == pytest.approx(EXPECTED)
    assert logits[1].tolist() == LOGITS  # a row without penalties is untouched


def test_presence_only_ignores_prompt_tokens() -> None:
    logits = torch.tensor([LOGITS])
    apply_penalties(logits, [_state_with_output(SamplingParams(presence_penalty=1.0), [3, 3])])
    assert logits[0].tolist() == pytest.approx([2.0, -1.0, 0.5, 2.0, -2.0, 0.0])


def test_counts_stay_incremental_after_first_use() -> None:
    state = _state_with_output(PENALTIES, [3])
    counts = state.token_counts(6, torch.device("cpu"))
    state.append(3)
    state.append(1)
    assert state.token_counts(6, torch.device("cpu")) is counts  # updated in place, not rebuilt
    fresh = TokenCounts(6, PROMPT, state.output_token_ids)
    assert torch.equal(counts.output_counts, fresh.output_counts)
    assert counts.output_counts.tolist() == [0, 1, 0, 2, 0, 0]
    assert counts.prompt_mask.tolist() == [True, False, False, False, True, False]
    logits = torch.tensor([LOGITS])
    apply_penalties(logits, [state])
    assert logits[0].tolist() == pytest.approx(EXPECTED)


def test_counts_reject_out_of_vocab_ids() -> None:
    with pytest.raises(ValueError, match="prompt_token_ids"):
        TokenCounts(4, [0, 9], [])
    counts = TokenCounts(4, [0], [])
    with pytest.raises(ValueError, match="token id 4"):
        counts.add(4)


def test_greedy_sampling_uses_penalised_logits() -> None:
    # raw argmax is token 3; after the penalties token 0 (1.0) beats token 3 (0.25)
    state = _state_with_output(dataclasses.replace(PENALTIES, temperature=0.0), OUTPUT)
    out = Sampler().sample(torch.tensor([LOGITS]), [state])
    assert out.token_ids.tolist() == [0]


def test_min_tokens_masks_eos_and_stop_ids_until_reached() -> None:
    eos, stop_id = 3, 0
    params = SamplingParams(temperature=0.0, min_tokens=2, stop_token_ids=[stop_id])
    state = SequenceState(params, PROMPT, eos_token_ids=[eos])
    logits = torch.tensor([[9.0, 1.0, 0.5, 10.0, -2.0, 0.0]])
    sampler = Sampler()
    assert sampler.sample(logits, [state]).token_ids.tolist() == [1]  # eos (3) and stop id (0) masked
    state.append(1)
    assert sampler.sample(logits, [state]).token_ids.tolist() == [1]
    state.append(1)
    assert sampler.sample(logits, [state]).token_ids.tolist() == [eos]  # min_tokens reached


def test_min_tokens_with_ignore_eos_masks_only_stop_ids() -> None:
    params = SamplingParams(min_tokens=3, stop_token_ids=[0], ignore_eos=True)
    logits = torch.zeros(1, 6)
    mask_stop_tokens_below_min(logits, make_states([params], PROMPT, eos_token_ids=[3, 99]))
    assert logits[0].tolist() == [float("-inf"), 0.0, 0.0, 0.0, 0.0, 0.0]
