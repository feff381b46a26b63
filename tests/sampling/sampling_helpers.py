"""Small builders shared by the sampling tests."""

from __future__ import annotations

from collections.abc import Sequence

from bastion.sampling.params import SamplingParams
from bastion.sampling.state import SequenceState


def make_states(
    params: Sequence[SamplingParams],
    prompt_token_ids: Sequence[int] = (),
    eos_token_ids: Sequence[int] = (),
) -> list[SequenceState]:
    """One SequenceState per params entry, all sharing the same prompt and eos ids."""
    return [SequenceState(p, prompt_token_ids, eos_token_ids) for p in params]
