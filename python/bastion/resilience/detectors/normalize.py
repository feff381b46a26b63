"""Text normalization shared by every detector: invisible-character classes and the NFKC detection view."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

# Unicode "tag" characters: invisible copies of ASCII, used to smuggle instructions past humans.
TAG_RANGE = range(0xE0000, 0xE0080)
ZERO_WIDTH = frozenset({0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x180E, 0x00AD, 0x2061, 0x2062, 0x2063, 0x2064})
# Embeddings, overrides and isolates reorder displayed text ("Trojan Source").
BIDI_CONTROLS = frozenset({0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F})
# The characters the detection view may change: everything outside ASCII.
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def invisible_kind(char: str) -> str | None:
    """``UNICODE_TAG``, ``ZERO_WIDTH`` or ``BIDI_CONTROL`` for an invisible character, else None."""
    code = ord(char)
    if code in TAG_RANGE:
        return "UNICODE_TAG"
    if code in ZERO_WIDTH:
        return "ZERO_WIDTH"
    if code in BIDI_CONTROLS:
        return "BIDI_CONTROL"
    return None


@lru_cache(maxsize=4096)
def _nfkc(char: str) -> str:
    return unicodedata.normalize("NFKC", char)


@lru_cache(maxsize=16)
def detection_view(text: str) -> tuple[str, Sequence[int]]:
    """The text detectors look at, and for each of its characters the index it came from in ``text``.

    Each character is NFKC-normalized on its own (full-width ``４`` → ``4``, ligatures split) and
    invisible characters are dropped, so ``ig<ZWSP>nore`` reads ``ignore``. Normalizing per character
    keeps an exact offset map; it differs from whole-string NFKC only for combining sequences, which the
    built-in patterns never span. ASCII runs are copied whole (no ASCII character is invisible or changed
    by NFKC). Cached because every guard of a pipeline asks for the same text.
    """
    if text.isascii():
        return text, range(len(text))
    pieces: list[str] = []
    origin: list[int] = []
    cursor = 0
    for match in _NON_ASCII.finditer(text):
        index, char = match.start(), match.group()
        pieces.append(text[cursor:index])
        origin.extend(range(cursor, index))
        cursor = index + 1
        if invisible_kind(char) is None:
            normalized = _nfkc(char)
            pieces.append(normalized)
            origin.extend([index] * len(normalized))
    pieces.append(text[cursor:])
    origin.extend(range(cursor, len(text)))
    return "".join(pieces), tuple(origin)
