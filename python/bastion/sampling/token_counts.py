"""Per-request token statistics the penalties need, kept up to date one token at a time.

The sampler applies penalties to a whole batch with dense ``[S, V]`` tensors. Rebuilding those from
token lists every step costs O(prompt + output) per request per step; instead each request owns a
dense ``output_counts`` vector and a ``prompt_mask`` built once, and ``add`` bumps one entry per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class TokenCounts:
    """Dense ``[vocab_size]`` occurrence data of one request, on the device of its logits.

    ``output_counts[t]`` is how many times token ``t`` was generated (frequency/presence penalties);
    ``prompt_mask[t]`` is True when ``t`` occurs in the prompt (with the output, the repetition penalty).
    """

    def __init__(
        self,
        vocab_size: int,
        prompt_token_ids: Sequence[int],
        output_token_ids: Sequence[int],
        device: torch.device | str = "cpu",
    ) -> None:
        """Build the vectors from the token lists once; later tokens arrive through ``add``."""
        self.vocab_size = vocab_size
        self.output_counts = torch.zeros(vocab_size, dtype=torch.int32, device=device)
        self.prompt_mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        if prompt_token_ids:
            prompt = self._as_index(prompt_token_ids, "prompt_token_ids")
            self.prompt_mask[prompt] = True
        if output_token_ids:
            output = self._as_index(output_token_ids, "output_token_ids")
            self.output_counts.index_add_(0, output, torch.ones_like(output, dtype=torch.int32))

    @property
    def device(self) -> torch.device:
        """The device the vectors live on."""
        return self.output_counts.device

    def add(self, token_id: int) -> None:
        """Count one newly generated token."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        self.output_counts[token_id] += 1

    def _as_index(self, token_ids: Sequence[int], name: str) -> torch.Tensor:
        """Token ids as an int64 index tensor, rejecting ids outside the vocabulary."""
        index = torch.as_tensor(list(token_ids), dtype=torch.int64, device=self.device)
        if int(index.min()) < 0 or int(index.max()) >= self.vocab_size:
            raise ValueError(f"{name} holds ids outside the vocabulary (size {self.vocab_size})")
        return index
