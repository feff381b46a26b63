"""``TokenBitmask``: which tokens each constrained row of a sampling step may take.

The engine fills it from the requests' grammars each step; the sampler applies it to the logits with
``bastion.ops.apply_token_bitmask`` after penalties and the min_tokens mask, before the draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenBitmask:
    """Row r of ``bitmask`` (int32 ``[R, ceil(V/32)]``, bit ``v % 32`` of word ``v // 32`` set when token v
    is allowed) constrains sampling row ``rows[r]`` (int64 ``[R]``, distinct); other rows are free."""

    bitmask: torch.Tensor
    rows: torch.Tensor

    def __post_init__(self) -> None:
        """Check shapes and dtypes (values are the filler's business)."""
        if self.bitmask.dim() != 2 or self.bitmask.dtype != torch.int32:
            raise ValueError(f"bitmask must be int32 [rows, words], got {self.bitmask.dtype} {tuple(self.bitmask.shape)}")
        if self.rows.dim() != 1 or self.rows.shape[0] != self.bitmask.shape[0]:
            raise ValueError(f"rows must be [{self.bitmask.shape[0]}], got {tuple(self.rows.shape)}")

    @property
    def num_rows(self) -> int:
        """How many rows are constrained."""
        return int(self.rows.shape[0])

    def to(self, device: torch.device) -> TokenBitmask:
        """The same masks on ``device`` (a no-op when they are there already)."""
        if self.bitmask.device == device and self.rows.device == device:
            return self
        return TokenBitmask(self.bitmask.to(device, non_blocking=True), self.rows.to(device, non_blocking=True))
