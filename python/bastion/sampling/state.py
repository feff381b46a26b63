"""``SequenceState``: what the sampler needs to know about one running request between steps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch

from bastion.sampling.params import SamplingParams
from bastion.sampling.token_counts import TokenCounts


class SequenceState:
    """One request's sampling state: params, prompt and output tokens, penalty counts and RNG.

    The engine creates one per request and calls ``append`` with every token it keeps; the sampler
    only reads the state (and advances ``generator``). ``generator`` is a torch.Generator seeded with
    ``params.seed``, created on the device of the first logits it samples from, so a seeded request
    draws the same tokens whatever else shares its batch. Penalty counts are built on first use (only
    for requests with penalties) and then updated incrementally by ``append``.
    """

    def __init__(
        self,
        params: SamplingParams,
        prompt_token_ids: Sequence[int],
        eos_token_ids: Iterable[int] = (),
        default_seed: int | None = None,
    ) -> None:
        """Hold ``params`` (checked by the engine's input processor) for a request whose prompt is
        ``prompt_token_ids``; eos ids come from the tokenizer.

        ``default_seed`` seeds the request when ``params.seed`` is None (the engine derives one per
        request from ``EngineConfig.seed``, so a whole run is reproducible and batch-independent).
        """
        self.params = params
        self.prompt_token_ids: list[int] = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.eos_token_ids: frozenset[int] = frozenset(eos_token_ids)
        self.generator: torch.Generator | None = None
        self.seed: int | None = params.seed if params.seed is not None else default_seed
        self._counts: TokenCounts | None = None
        # tokens that end generation; masked while fewer than min_tokens tokens exist
        eos = frozenset() if params.ignore_eos else self.eos_token_ids
        # SamplingParams normalises stop_token_ids to a tuple
        self.stop_token_ids: frozenset[int] = eos | frozenset(cast(tuple[int, ...], params.stop_token_ids))

    @property
    def below_min_tokens(self) -> bool:
        """True while eos and stop_token_ids must not be sampled (fewer than ``min_tokens`` generated)."""
        return len(self.output_token_ids) < self.params.min_tokens and bool(self.stop_token_ids)

    def append(self, token_id: int) -> None:
        """Record a generated token (and count it for the penalties)."""
        if self._counts is not None:
            self._counts.add(token_id)
        self.output_token_ids.append(token_id)

    def token_counts(self, vocab_size: int, device: torch.device) -> TokenCounts:
        """The penalty counts, built from the token lists the first time they are needed."""
        counts = self._counts
        if counts is None or counts.vocab_size != vocab_size or counts.device != device:
            counts = TokenCounts(vocab_size, self.prompt_token_ids, self.output_token_ids, device)
            self._counts = counts
        return counts

    def generator_for(self, device: torch.device) -> torch.Generator | None:
        """This request's seeded generator on ``device``, or None when the request has no seed."""
        if self.seed is None:
            return None
        if self.generator is None:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed)
        elif self.generator.device != device:
            raise ValueError(
                f"request seeded on {self.generator.device} cannot sample logits on {device}; "
                "keep a request's logits on one device"
            )
        return self.generator
