"""What a detector reports (``Finding``), how findings become redacted text, and where they lie in the text.

Detectors look at the *detection view* of a text (``detection_view``: NFKC per character, invisible
characters dropped); ``find_in`` runs one there and maps its spans back onto the original text, which is
never rewritten except by redaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bastion.resilience.detectors.normalize import detection_view


@dataclass(frozen=True)
class Finding:
    """One detection: ``kind`` (e.g. ``CARD``), the span ``[start, end)`` in the checked text, a detail.

    ``replacement`` is what redaction puts in place of the span; None means ``[REDACTED:KIND]``.
    """

    kind: str
    start: int
    end: int
    detail: str = ""
    replacement: str | None = None

    @property
    def redacted_as(self) -> str:
        """The text that replaces this finding's span when it is redacted."""
        return placeholder(self.kind) if self.replacement is None else self.replacement


Detector = Callable[[str], Iterable[Finding]]


def placeholder(kind: str) -> str:
    """The text that replaces a redacted finding of ``kind``."""
    return f"[REDACTED:{kind.upper()}]"


def apply_redactions(text: str, findings: Iterable[Finding]) -> str:
    """``text`` with every finding's span replaced by its ``redacted_as`` text. Overlapping spans merge
    into one, replaced like the span that starts first (the longest one on a tie)."""
    merged: list[list] = []  # [start, end, replacement]
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        if merged and finding.start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], finding.end)
        else:
            merged.append([finding.start, finding.end, finding.redacted_as])
    pieces, cursor = [], 0
    for start, end, replacement in merged:
        pieces.append(text[cursor:start])
        pieces.append(replacement)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def find_in(text: str, detect: Detector, use_view: bool = True) -> list[Finding]:
    """The non-empty findings of ``detect`` with offsets into ``text``.

    With ``use_view`` (the default) ``detect`` sees the detection view of ``text`` and its spans are
    mapped back to the characters they came from; without, it sees ``text`` itself (detectors of the
    very characters the view drops).
    """
    if not use_view:
        return [f for f in detect(text) if f.end > f.start]
    view, origin = detection_view(text)
    return [Finding(f.kind, origin[f.start], origin[f.end - 1] + 1, f.detail, f.replacement)
            for f in detect(view) if f.end > f.start]
