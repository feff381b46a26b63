"""Output processing: sampled tokens become text, stop decisions and ``RequestOutput``s (vLLM's
``OutputProcessor``).

A token meets three pieces, in this order:

* ``IncrementalDetokenizer``: the text each new token adds, without re-decoding the whole output.
  Prefix-offset scheme (as in vLLM / TGI): ``window[:read_offset]`` is already emitted (or is prompt
  context); decoding a few context tokens in front matters because many tokenizers render a token
  differently at the start of a string. A decode ending in U+FFFD stopped in the middle of a
  multi-byte UTF-8 character: nothing is emitted until the rest of its bytes arrive.
* ``StopChecker``: per token, in vLLM's order of precedence: before ``min_tokens`` tokens nothing
  stops the request (except ``max_tokens``); eos (unless ``ignore_eos``) or a ``stop_token_ids``
  token -> "stop", its text left out unless ``include_stop_str_in_output``, ``stop_reason`` the id
  (None for eos, as in vLLM); a stop string anywhere in the new text, across token boundaries too ->
  "stop", the text cut before it (after it with ``include_stop_str_in_output``); ``max_tokens`` ->
  "length". While running, the longest tail that could begin a stop string is held back until later
  text rules it out (or the request ends).
* ``OutputProcessor``: builds both for each request and turns a request's state into the
  ``RequestOutput`` due under its ``output_kind``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from bastion.engine.outputs import RequestOutput
from bastion.sampling.params import SamplingParams

if TYPE_CHECKING:
    from bastion.engine.request import EngineRequest
    from bastion.model import Tokenizer

REPLACEMENT_CHAR = "\ufffd"
# prompt tokens decoded in front of the first output token, for tokenizers whose text depends on context
PROMPT_CONTEXT_TOKENS = 5

StopFinishReason = Literal["stop", "length"]


class IncrementalDetokenizer:
    """Turns a stream of token ids into a stream of text pieces, one ``add`` per token.

    ``decode(ids) -> str`` is the tokenizer's decode. Ids in ``skip_token_ids`` (the special tokens,
    when ``skip_special_tokens``) produce no text. The concatenation of everything ``add`` and
    ``flush`` return equals ``decode`` of all the non-skipped output ids.
    """

    def __init__(self, decode: Callable[[list[int]], str], prompt_token_ids: Sequence[int] = (),
                 skip_token_ids: Iterable[int] = ()) -> None:
        """Start after ``prompt_token_ids`` (only its last few tokens are kept, as decoding context)."""
        if not callable(decode):
            raise TypeError(f"decode must be callable, got {type(decode).__name__}")
        self._decode = decode
        self._skip = frozenset(skip_token_ids)
        context = [t for t in prompt_token_ids if t not in self._skip][-PROMPT_CONTEXT_TOKENS:]
        self._window: list[int] = context
        self._read_offset = len(context)  # window[:read_offset] is already emitted (or is context)
        self._prefix_text = self._decode(context) if context else ""

    def add(self, token_id: int) -> str:
        """Append one token; return the text that became complete (possibly "")."""
        if token_id in self._skip:
            return ""
        self._window.append(token_id)
        return self._emit(allow_partial=False)

    def flush(self) -> str:
        """Return any text held back for an incomplete character (as U+FFFD); call once at the end."""
        return self._emit(allow_partial=True)

    def _emit(self, *, allow_partial: bool) -> str:
        """Text of the window beyond the already-emitted prefix, unless it ends mid-character."""
        if self._read_offset == len(self._window):
            return ""
        full_text = self._decode(self._window)
        if len(full_text) <= len(self._prefix_text):
            return ""
        if full_text.endswith(REPLACEMENT_CHAR) and not allow_partial:
            return ""
        new_text = full_text[len(self._prefix_text) :]
        # slide the window: the tokens just emitted become the next step's context
        del self._window[: self._read_offset]
        self._read_offset = len(self._window)
        self._prefix_text = self._decode(self._window)
        return new_text


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

    def __init__(self, params: SamplingParams, detokenizer: IncrementalDetokenizer | None,
                 eos_token_ids: Iterable[int] = ()) -> None:
        """``detokenizer`` may be None only when ``params.stop`` is empty (then no text is produced)."""
        if detokenizer is None and params.stop:
            raise ValueError("stop strings need a detokenizer: pass an IncrementalDetokenizer")
        self.params = params
        self._detokenizer = detokenizer
        self._eos_token_ids = frozenset() if params.ignore_eos else frozenset(eos_token_ids)
        # SamplingParams normalises stop and stop_token_ids to tuples
        self._stop_token_ids = frozenset(cast(tuple[int, ...], params.stop_token_ids))
        self._stops = cast(tuple[str, ...], params.stop)
        self._max_stop_len = max((len(s) for s in self._stops), default=0)
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

    def end(self) -> StopDecision:
        """Finish with "stop" now (the request's grammar has ended): release all text, held-back bytes too."""
        if self.finished:
            raise ValueError(f"request already finished ({self.finish_reason})")
        self._append_text(self._flush(), may_stop=False)
        return self._finish("stop", None)

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
        hits = [(self._window.find(stop, max(0, old_len - len(stop) + 1)), stop) for stop in self._stops]
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
            if any(stop.startswith(tail) for stop in self._stops):
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


class OutputProcessor:
    """The engine's output side: each request's stop checker, its tokens' text, its ``RequestOutput``s."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        """Decode with ``tokenizer``; its eos ids end a request unless ``params.ignore_eos``."""
        self._tokenizer = tokenizer
        self.eos_token_ids = list(tokenizer.eos_token_ids)

    def stop_checker(self, params: SamplingParams, prompt_token_ids: Sequence[int]) -> StopChecker:
        """A new request's stop checker, detokenizing after ``prompt_token_ids``."""
        decode = functools.partial(self._tokenizer.decode, skip_special_tokens=params.skip_special_tokens)
        return StopChecker(params, IncrementalDetokenizer(decode, prompt_token_ids), self.eos_token_ids)

    @staticmethod
    def process_token(req: EngineRequest, token_id: int, logprobs: dict[int, float] | None) -> StopDecision:
        """Record a sampled token's logprobs and text on ``req``; the caller applies the finish, if any."""
        if logprobs is not None:
            if req.logprobs is None:
                req.logprobs = []
            req.logprobs.append(logprobs)
        return req.stop.process(token_id)

    @staticmethod
    def make_output(req: EngineRequest) -> RequestOutput | None:
        """The output due now under ``params.output_kind``; None when there is nothing to send."""
        kind = req.params.output_kind
        if kind == "final_only" and not req.finished:
            return None
        tokens = req.output_token_ids
        if kind == "delta":
            new_tokens, new_text = tokens[req.sent_tokens:], req.text[req.sent_chars:]
            if not new_tokens and not new_text and not req.finished:
                return None
            logprobs = req.logprobs[req.sent_tokens:] if req.logprobs is not None else None
        else:
            new_tokens, new_text, logprobs = list(tokens), req.text, req.logprobs
        req.sent_tokens, req.sent_chars = len(tokens), len(req.text)
        return RequestOutput(
            request_id=req.request_id, prompt=req.prompt, prompt_token_ids=req.prompt_token_ids, text=new_text,
            token_ids=list(new_tokens), finished=req.finished, finish_reason=req.finish_reason,
            metrics=req.metrics, stop_reason=req.stop_reason,
            logprobs=list(logprobs) if logprobs is not None else None, num_total_output_tokens=len(tokens),
        )
