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
    vocab_size, device, dtype = logits.shape[1], logits.device, logits.dtype
    counts = [states[i].token_counts(vocab_size, device) for i in rows]
    params = [states[i].params for i in rows]
    # the common case is every row penalised: then work on the whole tensor, no gather/scatter
    index = None if len(rows) == len(states) else torch.tensor(rows, dtype=torch.int64, device=device)
    selected = logits if index is None else logits.index_select(0, index)
    output_counts = torch.stack([c.output_counts for c in counts])
    in_output = output_counts > 0

    if any(p.repetition_penalty != 1.0 for p in params):
        seen = torch.stack([c.prompt_mask for c in counts]).logical_or_(in_output)
        repetition = torch.tensor([p.repetition_penalty for p in params], dtype=dtype, device=device)[:, None]
        penalised = torch.where(selected > 0, selected / repetition, selected * repetition)
        selected = torch.where(seen, penalised, selected)
    if any(p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 for p in params):
        frequency, presence = torch.tensor(
            [[p.frequency_penalty, p.presence_penalty] for p in params], dtype=dtype, device=device
        ).unbind(1)
        selected = selected - (frequency[:, None] * output_counts + presence[:, None] * in_output)
    if index is None:
        logits.copy_(selected)
    else:
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
