"""The batched sampler: penalties, min_tokens and grammar masking, then one draw per row via ``bastion.ops.sample``.

Order per step (vLLM's): logprobs are taken from the raw logits (for a row under a grammar: the raw
logits with the grammar's forbidden tokens at -inf, i.e. the model's distribution renormalised over
the tokens it may take); repetition, frequency and presence penalties; the min_tokens mask; the
grammar's token bitmask (``bastion.ops.apply_token_bitmask``); then temperature, top-k, min-p, top-p
and the draw inside ``bastion.ops.sample``. A grammar that allows nothing but the stop tokens wins over
min_tokens. Seeded rows draw from their own ``torch.Generator`` so their tokens do not depend on the
batch. When every row is greedy with nothing to process, the step is a bare argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bastion import ops
from bastion.sampling.logprobs import TokenLogprobs, compute_logprobs
from bastion.sampling.penalties import apply_penalties, mask_stop_tokens_below_min
from bastion.sampling.state import SequenceState
from bastion.sampling.token_bitmask import TokenBitmask


@dataclass(frozen=True)
class SamplerOutput:
    """Result of one sampling step.

    Attributes:
        token_ids: int64 [S], the token drawn for each row.
        logprobs: per row ``TokenLogprobs`` (None for rows that did not ask), or None when no row asked.
    """

    token_ids: torch.Tensor
    logprobs: list[TokenLogprobs | None] | None


class Sampler:
    """Samples the next token of every request in a batch from its logits row."""

    def __init__(self, backend: str = "auto", mask_backend: str | None = None) -> None:
        """``backend`` is passed to ``bastion.ops.sample`` ("auto", "torch", "cpu", "triton", "cuda"),
        ``mask_backend`` (default: ``backend``) to ``bastion.ops.apply_token_bitmask``."""
        self.backend = backend
        self.mask_backend = backend if mask_backend is None else mask_backend

    def sample(self, logits: torch.Tensor, states: Sequence[SequenceState],
               bitmask: TokenBitmask | None = None) -> SamplerOutput:
        """Draw one token per row of ``logits`` [S, V] for the requests ``states`` (same order).

        ``bitmask`` forbids, in the rows it names, the tokens their grammars do not allow. ``logits`` is
        not modified. The states are read, not updated: the engine calls ``state.append(token)`` for each
        token it keeps. Seeded states' generators advance.
        """
        self._check_inputs(logits, states)
        if not logits.dtype.is_floating_point:
            raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
        raw = logits if logits.dtype == torch.float32 else logits.float()
        if not states:  # nothing scheduled for sampling this step
            return SamplerOutput(token_ids=torch.empty(0, dtype=torch.int64, device=logits.device), logprobs=None)
        if bitmask is not None and bitmask.num_rows:
            raw = raw.clone() if raw is logits else raw
            ops.apply_token_bitmask(raw, bitmask.bitmask, bitmask.rows.to(raw.device), backend=self.mask_backend)
        else:
            bitmask = None
        needs_processing = any(s.params.has_penalties or s.below_min_tokens for s in states)
        if not needs_processing and all(s.params.is_greedy for s in states):
            token_ids = raw.argmax(dim=-1)
        else:
            token_ids = self._draw(raw, states, needs_processing, bitmask)
        return SamplerOutput(token_ids=token_ids, logprobs=compute_logprobs(raw, token_ids, states))

    def _draw(self, logits: torch.Tensor, states: Sequence[SequenceState], needs_processing: bool,
              bitmask: TokenBitmask | None) -> torch.Tensor:
        """Process a copy of ``logits`` and draw through ``bastion.ops.sample`` with per-row parameters.

        ``logits`` already carries the grammar masks; a row that the min_tokens mask leaves without any
        allowed token (its grammar allows only the stop tokens) gets its grammar-masked row back.
        """
        if needs_processing:
            masked = logits
            logits = logits.clone()
            apply_penalties(logits, states)
            mask_stop_tokens_below_min(logits, states)
            if bitmask is not None:
                self._let_grammar_end(logits, masked, states)
        device = logits.device
        params = [s.params for s in states]
        temperature = torch.tensor([0.0 if p.is_greedy else p.temperature for p in params], device=device)
        top_k = torch.tensor([p.top_k for p in params], dtype=torch.int64, device=device)
        top_p = torch.tensor([p.top_p for p in params], device=device)
        min_p = torch.tensor([p.min_p for p in params], device=device)
        generators = [s.generator_for(device) for s in states]
        has_seed = any(g is not None for g in generators)
        return ops.sample(
            logits, temperature, top_k, top_p, min_p, generators if has_seed else None, backend=self.backend
        )

    @staticmethod
    def _let_grammar_end(logits: torch.Tensor, masked: torch.Tensor, states: Sequence[SequenceState]) -> None:
        """Rows below min_tokens whose every token is now -inf: restore the grammar-masked row."""
        rows = [i for i, s in enumerate(states) if s.below_min_tokens]
        if not rows:
            return
        index = torch.tensor(rows, dtype=torch.int64, device=logits.device)
        dead = torch.isneginf(logits.index_select(0, index).amax(dim=1))
        if bool(dead.any()):
            index = index[dead]
            logits.index_copy_(0, index, masked.index_select(0, index))

    @staticmethod
    def _check_inputs(logits: torch.Tensor, states: Sequence[SequenceState]) -> None:
        """Reject a logits tensor that does not match the batch."""
        if logits.dim() != 2:
            raise ValueError(f"logits must be [num_seqs, vocab_size], got shape {tuple(logits.shape)}")
        if logits.shape[0] != len(states):
            raise ValueError(f"logits has {logits.shape[0]} rows for {len(states)} sequence states")
