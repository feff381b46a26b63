"""``AttentionMetadata``: where the tokens of one flat varlen batch read and write the paged KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Paged-attention inputs of one step, as produced by the scheduler (see docs/ARCHITECTURE.md).

    ``slot_mapping [T]`` int64 (flat cache slot of each token, -1 = skip), ``block_table [R, max_blocks]``
    int32, ``seq_lens [R]`` int32 (cached tokens after this step), ``cu_seqlens_q [R+1]`` int32 (prefix
    sums of the tokens of each sequence in this step), and the two maxima kernels size their grids by.
    """

    slot_mapping: torch.Tensor
    block_table: torch.Tensor
    seq_lens: torch.Tensor
    cu_seqlens_q: torch.Tensor
    max_seqlen_q: int
    max_seq_len: int

    def to(self, device: torch.device | str) -> AttentionMetadata:
        """A copy with every tensor on ``device`` (non-blocking where the source is pinned)."""
        return AttentionMetadata(
            slot_mapping=self.slot_mapping.to(device, non_blocking=True),
            block_table=self.block_table.to(device, non_blocking=True),
            seq_lens=self.seq_lens.to(device, non_blocking=True),
            cu_seqlens_q=self.cu_seqlens_q.to(device, non_blocking=True),
            max_seqlen_q=self.max_seqlen_q,
            max_seq_len=self.max_seq_len,
        )
