"""Logprobs of generated tokens.

The distribution is the log-softmax of the RAW logits the model produced, before penalties,
temperature, top-k/top-p/min-p or the min_tokens mask (vLLM's default, ``logprobs_mode="raw_logprobs"``):
a caller gets the model's own belief about each token, independent of how it was sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from bastion.sampling.state import SequenceState


class TokenLogprobs(dict[int, float]):
    """Logprobs for one generated token: a ``{token_id: logprob}`` dict plus the sampled token's facts.

    As a dict (vLLM's per-position form, what ``RequestOutput.logprobs`` holds) it maps the
    ``params.logprobs`` most likely tokens, most likely first, and then the sampled token if it is not
    among them. Attributes:
        token_id: the sampled token.
        logprob: its log-probability under the raw-logit distribution.
        rank: 1 + the number of tokens strictly more likely than it (1 = the most likely).
        num_top: how many of the entries are the top tokens (``params.logprobs``).
    """

    def __init__(self, token_id: int, logprob: float, rank: int, top_logprobs: dict[int, float]) -> None:
        """Build from the sampled token's logprob and rank and the top tokens' logprobs."""
        super().__init__(top_logprobs)
        self.setdefault(token_id, logprob)
        self.token_id = token_id
        self.logprob = logprob
        self.rank = rank
        self.num_top = len(top_logprobs)

    @property
    def top_logprobs(self) -> dict[int, float]:
        """Only the top tokens (the sampled one appears only if it is among them)."""
        return dict(list(self.items())[: self.num_top])


def compute_logprobs(
    raw_logits: torch.Tensor, token_ids: torch.Tensor, states: Sequence[SequenceState]
) -> list[TokenLogprobs | None] | None:
    """Logprobs for the rows whose params ask for them; None when no row does.

    ``raw_logits`` is [S, V] before any processing, ``token_ids`` [S] the sampled tokens.
    """
    rows = [i for i, state in enumerate(states) if state.params.logprobs is not None]
    if not rows:
        return None
    device = raw_logits.device
    index = torch.tensor(rows, dtype=torch.int64, device=device)
    logprobs = torch.log_softmax(raw_logits.index_select(0, index).float(), dim=-1)
    chosen_ids = token_ids.index_select(0, index).unsqueeze(1)
    chosen = logprobs.gather(1, chosen_ids)
    ranks = (logprobs > chosen).sum(dim=1) + 1
    num_top = max(cast(int, states[i].params.logprobs) for i in rows)  # rows: the ones that are not None
    top_values, top_ids = logprobs.topk(num_top, dim=1) if num_top else (logprobs[:, :0], chosen_ids[:, :0])

    # one device->host transfer per field for the whole batch
    chosen_l, ranks_l = chosen.squeeze(1).tolist(), ranks.tolist()
    ids_l, top_ids_l, top_values_l = chosen_ids.squeeze(1).tolist(), top_ids.tolist(), top_values.tolist()
    result: list[TokenLogprobs | None] = [None] * len(states)
    for k, row in enumerate(rows):
        n = states[row].params.logprobs
        result[row] = TokenLogprobs(
            token_id=ids_l[k],
            logprob=chosen_l[k],
            rank=ranks_l[k],
            top_logprobs=dict(zip(top_ids_l[k][:n], top_values_l[k][:n], strict=True)),
        )
    return result
