"""``StopChecker``: decides when a request finishes and which text may be streamed so far.

Per generated token, in vLLM's order of precedence:
1. before ``min_tokens`` tokens exist nothing stops the request (except ``max_tokens``);
2. eos (unless ``ignore_eos``) or a ``stop_token_ids`` token -> "stop"; its text is left out unless
   ``include_stop_str_in_output``; ``stop_reason`` is the token id (None for eos, as in vLLM);
3. a stop string anywhere in the new text, including across token boundaries -> "stop", the text is
   cut before it (or after it with ``include_stop_str_in_output``); ``stop_reason`` is the string;
4. ``max_tokens`` tokens -> "length".
While running, the longest tail of the text that could be the beginning of a stop string is held back:
it is released once later text shows it is not a stop string (or at the end).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bastion.sampling.detokenizer import IncrementalDetokenizer
from bastion.sampling.params import SamplingParams

StopFinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class StopDecision:
    """Outcome of one token: the newly releasable text and, when finished, why."""

    text: str
    finish_reason: StopFinishReason | None = None
    stop_reason: str | int | None = None

    @property
    def finished(self) -> bool:
        """True when the request must stop after this token."""
        return self.finish_reason is not None


class StopChecker:
    """Tracks one request's output text and applies its stop conditions token by token."""

    def __init__(
        self,
        params: SamplingParams,
        detokenizer: IncrementalDetokenizer | None,
        eos_token_ids: Iterable[int] = (),
    ) -> None:
        """``detokenizer`` may be None only when ``params.stop`` is empty (then no text is produced)."""
        if detokenizer is None and params.stop:
            raise ValueError("stop strings need a detokenizer: pass an IncrementalDetokenizer")
        self.params = params
        self._detokenizer = detokenizer
        self._eos_token_ids = frozenset() if params.ignore_eos else frozenset(eos_token_ids)
        self._stop_token_ids = frozenset(params.stop_token_ids)
        self._max_stop_len = max((len(s) for s in params.stop), default=0)
        # with include_stop_str_in_output a stop prefix is released anyway, so nothing is held back
        self._hold_back = bool(params.stop) and not params.include_stop_str_in_output
        # Unreleased text plus up to max_stop_len - 1 released characters before it (a stop string may
        # start there when nothing is held back); older text lives only in _released_text, so each
        # step costs O(new text + longest stop string), not O(output length).
        self._window = ""
        self._window_released = 0  # how many leading characters of _window were already released
        self._released_text = ""
        self.num_tokens = 0
        self.finish_reason: StopFinishReason | None = None
        self.stop_reason: str | int | None = None

    @property
    def text(self) -> str:
        """The output text released so far."""
        return self._released_text

    @property
    def finished(self) -> bool:
        """True once a finish reason was decided."""
        return self.finish_reason is not None

    def process(self, token_id: int) -> StopDecision:
        """Account for one generated token; return the text to release and the finish reason if any."""
        if self.finished:
            raise ValueError(f"request already finished ({self.finish_reason}); no more tokens accepted")
        self.num_tokens += 1
        may_stop = self.num_tokens >= self.params.min_tokens
        stop_token = may_stop and (token_id in self._eos_token_ids or token_id in self._stop_token_ids)
        if stop_token:
            if self.params.include_stop_str_in_output:
                self._append_text(self._add_token(token_id), may_stop=False)
            self._append_text(self._flush(), may_stop=False)  # bytes held for a partial character
            return self._finish("stop", token_id if token_id in self._stop_token_ids else None)
        matched = self._append_text(self._add_token(token_id), may_stop=may_stop)
        if matched is None and self.num_tokens >= self.params.max_tokens:
            matched = self._append_text(self._flush(), may_stop=may_stop)
            if matched is None:
                return self._finish("length", None)
        if matched is not None:
            return self._finish("stop", matched)
        return StopDecision(self._release(self._releasable_end()))

    def _add_token(self, token_id: int) -> str:
        """The text ``token_id`` completes, or "" without a detokenizer."""
        return self._detokenizer.add(token_id) if self._detokenizer is not None else ""

    def _flush(self) -> str:
        """The text the detokenizer still holds for an incomplete character."""
        return self._detokenizer.flush() if self._detokenizer is not None else ""

    def _append_text(self, new_text: str, *, may_stop: bool) -> str | None:
        """Add ``new_text``; when a stop string now appears, cut the text there and return the string."""
        if not new_text:
            return None
        old_len = len(self._window)
        self._window += new_text
        if not may_stop:
            return None
        # only occurrences that end in the new text: earlier ones were already ruled out (or came
        # before min_tokens); any such occurrence starts in the unreleased part unless nothing is held
        hits = [(self._window.find(stop, max(0, old_len - len(stop) + 1)), stop) for stop in self.params.stop]
        hits = [(index, stop) for index, stop in hits if index >= 0]
        if not hits:
            return None
        index, stop = min(hits, key=lambda hit: hit[0])  # the earliest occurrence wins
        self._window = self._window[: index + len(stop) if self.params.include_stop_str_in_output else index]
        return stop

    def _releasable_end(self) -> int:
        """End (in ``_window``) of the text that can be streamed: all but a tail that may start a stop string."""
        end = len(self._window)
        if not self._hold_back:
            return end
        longest = min(self._max_stop_len - 1, end - self._window_released)
        for size in range(longest, 0, -1):
            tail = self._window[end - size :]
            if any(stop.startswith(tail) for stop in self.params.stop):
                return end - size
        return end

    def _release(self, end: int) -> str:
        """Release ``_window[_window_released:end]``, trim the window's old context, return the piece."""
        piece = self._window[self._window_released : end]
        self._released_text += piece
        keep_from = max(0, end - max(self._max_stop_len - 1, 0))
        self._window = self._window[keep_from:]
        self._window_released = end - keep_from
        return piece

    def _finish(self, reason: StopFinishReason, stop_reason: str | int | None) -> StopDecision:
        """Record the finish and release all remaining text."""
        self.finish_reason, self.stop_reason = reason, stop_reason
        return StopDecision(self._release(len(self._window)), reason, stop_reason)
