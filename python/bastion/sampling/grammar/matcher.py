"""``GrammarMatcher``: where one request stands in its grammar; it follows the request token by token.

The engine feeds it every token the request keeps (sampled or forced); it fills the request's row of
the step's token bitmask, tells which tokens the grammar forces next (jump-forward) and whether the
grammar has ended. Preemption by recompute keeps the request's tokens, so the matcher stays valid;
an aborted request simply drops it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class GrammarMatcher:
    """One request's llguidance ``LLMatcher`` and the count of tokens it accepted."""

    def __init__(self, matcher: Any, kind: str) -> None:
        """Wrap a fresh matcher of a constraint of ``kind`` ("json", "regex", ...; named in errors)."""
        self._matcher = matcher
        self.kind = kind
        self.num_accepted = 0

    @property
    def handle(self) -> Any:
        """The llguidance matcher (the batched bitmask fill takes these)."""
        return self._matcher

    def accept(self, token_id: int) -> bool:
        """Advance past one token; False (and the matcher in its error state) when the grammar forbids it."""
        ok = bool(self._matcher.consume_token(token_id))
        if ok:
            self.num_accepted += 1
        return ok

    def forced_tokens(self) -> list[int]:
        """The tokens the grammar allows next and nothing else (as the tokenizer would write them; the last
        one left out when a longer token could extend it); [] when the model must choose."""
        if self._matcher.is_stopped():
            return []
        return [int(t) for t in self._matcher.compute_ff_tokens()]

    def fill(self, bitmask: np.ndarray, row: int) -> None:
        """Write the allowed next tokens into row ``row`` of a C-contiguous int32 bitmask."""
        target = bitmask[row]
        self._matcher.unsafe_compute_mask_ptr(target.ctypes.data, target.nbytes)

    @property
    def is_stopped(self) -> bool:
        """True once the grammar has ended: nothing but end-of-sequence may follow (or an error happened)."""
        return bool(self._matcher.is_stopped())

    @property
    def is_accepting(self) -> bool:
        """True when the output so far is a complete match (the grammar may still allow more)."""
        return bool(self._matcher.is_accepting())

    @property
    def error(self) -> str | None:
        """The matcher's error (a rejected token, a grammar limit hit), or None."""
        if not self._matcher.is_error():
            return None
        lines = [line for line in str(self._matcher.get_error()).splitlines() if line.strip()]
        return lines[0][:300] if lines else "grammar error"

    def rollback(self, num_tokens: int) -> None:
        """Forget the last ``num_tokens`` accepted tokens."""
        if not self._matcher.rollback(num_tokens):
            raise ValueError(f"structured_outputs.{self.kind}: cannot roll back {num_tokens} tokens")
        self.num_accepted -= num_tokens
