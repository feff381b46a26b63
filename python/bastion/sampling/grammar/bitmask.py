"""``BitmaskFiller``: one step's token bitmask for every constrained request, filled in parallel.

llguidance's ``LLExecutor`` computes the rows on its own threads with the GIL released; the buffer is
allocated once (pinned when the logits live on a GPU) and reused every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bastion.sampling.grammar import library
from bastion.sampling.grammar.matcher import GrammarMatcher
from bastion.sampling.token_bitmask import TokenBitmask


class BitmaskFiller:
    """Fills ``[rows, words]`` int32 masks from the matchers of a step's constrained requests."""

    def __init__(self, words: int, max_rows: int, device: torch.device, threads: int | None = None) -> None:
        """Masks ``words`` int32 wide for up to ``max_rows`` rows (grown on demand), for logits on ``device``;
        ``threads`` for the parallel fill (None: llguidance's default, most of the cores)."""
        self.words = words
        self.device = device
        self._executor = library.llguidance().LLExecutor(num_threads=threads)
        self._buffer = self._allocate(max(1, max_rows))

    def _allocate(self, rows: int) -> torch.Tensor:
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        return torch.zeros((rows, self.words), dtype=torch.int32, pin_memory=pin)

    def fill(self, matchers: Sequence[GrammarMatcher], rows: Sequence[int]) -> TokenBitmask:
        """The masks of ``matchers``, row r constraining sampling row ``rows[r]``, on the filler's device."""
        n = len(matchers)
        if n > self._buffer.shape[0]:
            self._buffer = self._allocate(n)
        view = self._buffer[:n]
        array = view.numpy()
        if n == 1:
            matchers[0].fill(array, 0)
        elif n:
            self._executor.unsafe_compute_mask_ptr([(m.handle, i) for i, m in enumerate(matchers)],
                                                   array.ctypes.data, self.words * 4, n)
        index = torch.tensor(list(rows), dtype=torch.int64)
        return TokenBitmask(view, index).to(self.device)


def allowed_tokens(bitmask: np.ndarray | torch.Tensor, row: int, vocab_size: int) -> list[int]:
    """The token ids row ``row`` of an int32 bitmask allows (for tests and debugging)."""
    words = bitmask[row].numpy() if isinstance(bitmask, torch.Tensor) else bitmask[row]
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), bitorder="little")[:vocab_size]
    return np.flatnonzero(bits).tolist()
