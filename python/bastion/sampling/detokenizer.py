"""``IncrementalDetokenizer``: the text each new token adds, without re-decoding the whole output.

Prefix-offset scheme (as in vLLM / TGI): keep a small window of token ids. ``prefix_offset`` marks the
start of the window, ``read_offset`` the first token whose text has not been emitted yet. For a new
token, decode ``window[:read]`` and ``window[:]``; the extra suffix of the second is the new text.
Decoding a few context tokens in front matters because many tokenizers render a token differently at
the start of a string (leading-space handling). If the decode ends in U+FFFD, the token(s) ended in the
middle of a multi-byte UTF-8 character: emit nothing and wait for the rest of its bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

REPLACEMENT_CHAR = "\ufffd"
# prompt tokens decoded in front of the first output token, for tokenizers whose text depends on context
PROMPT_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """Turns a stream of token ids into a stream of text pieces, one ``add`` per token.

    ``decode(ids) -> str`` is the tokenizer's decode. Ids in ``skip_token_ids`` (the special tokens,
    when ``skip_special_tokens``) produce no text. The concatenation of everything ``add`` and
    ``flush`` return equals ``decode`` of all the non-skipped output ids.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        prompt_token_ids: Sequence[int] = (),
        skip_token_ids: Iterable[int] = (),
    ) -> None:
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
