"""Logit processors applied before the draw, vectorised over the batch rows that need them.

- repetition penalty (HF ``RepetitionPenaltyLogitsProcessor``): for every token seen in the prompt or
  the output, a positive logit is divided by the penalty and a negative one multiplied by it;
- frequency/presence penalties (vLLM/OpenAI): ``logit -= frequency * count + presence * (count > 0)``
  over output tokens only;
- min_tokens: eos and stop_token_ids get ``-inf`` while fewer than ``min_tokens`` tokens exist.

Per-row Python work is limited to gathering each row's parameters; nothing loops over the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bastion.sampling.state import SequenceState


def apply_penalties(logits: torch.Tensor, states: Sequence[SequenceState]) -> None:
    """Apply repetition, frequency and presence penalties to ``logits`` [S, V] in place."""
    rows = [i for i, state in enumerate(states) if state.params.has_penalties]
    if not rows:
        return
    vocab_size, device = logits.shape[1], logits.device
    counts_list = [states[i].token_counts(vocab_size, device) for i in rows]
    output_counts = torch.stack([c.output_counts for c in counts_list]).to(logits.dtype)
    prompt_mask = torch.stack([c.prompt_mask for c in counts_list])
    params = [states[i].params for i in rows]
    repetition, frequency, presence = torch.tensor(
        [[p.repetition_penalty, p.frequency_penalty, p.presence_penalty] for p in params],
        dtype=logits.dtype,
        device=device,
    ).unbind(1)

    index = torch.tensor(rows, dtype=torch.int64, device=device)
    selected = logits.index_select(0, index)
    in_output = output_counts > 0
    seen = prompt_mask | in_output
    repetition = repetition.unsqueeze(1)
    penalised = torch.where(selected > 0, selected / repetition, selected * repetition)
    selected = torch.where(seen, penalised, selected)
    selected -= frequency.unsqueeze(1) * output_counts + presence.unsqueeze(1) * in_output.to(logits.dtype)
    logits.index_copy_(0, index, selected)


def mask_stop_tokens_below_min(logits: torch.Tensor, states: Sequence[SequenceState]) -> None:
    """Set eos/stop_token_ids logits to ``-inf`` in place for rows still below ``min_tokens``."""
    vocab_size = logits.shape[1]
    rows: list[int] = []
    cols: list[int] = []
    for i, state in enumerate(states):
        if state.below_min_tokens:
            ids = [token for token in state.stop_token_ids if token < vocab_size]
            rows.extend([i] * len(ids))
            cols.extend(ids)
    if rows:
        logits[torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device)] = float("-inf")
