"""Invisible-text guard: Unicode tag characters, zero-width characters and bidi controls."""

from __future__ import annotations

from collections.abc import Iterable

from bastion.resilience.detectors import Finding
from bastion.resilience.detectors.normalize import TAG_RANGE, invisible_kind
from bastion.resilience.guardrails.base import BOTH_STAGES, SpanGuard

ALL_KINDS = frozenset({"UNICODE_TAG", "ZERO_WIDTH", "BIDI_CONTROL"})


class InvisibleTextGuard(SpanGuard):
    """Finds runs of invisible characters of the selected ``kinds``.

    Tag characters (U+E0000–E007F) mirror ASCII and are the usual carrier for hidden prompts ("ASCII
    smuggling"), so each tag run's ``detail`` spells out the hidden text. Redaction *removes* the run
    (a placeholder would only add noise). Note that U+200D (zero-width joiner) also glues emoji
    sequences together, which is why the default pipeline only logs zero-width characters.
    """

    name = "invisible_text"
    uses_detection_view = False

    def __init__(self, kinds: Iterable[str] = ALL_KINDS, action: str = "block",
                 stages: Iterable[str] = BOTH_STAGES, name: str | None = None) -> None:
        """Detect the invisible ``kinds`` (subset of UNICODE_TAG, ZERO_WIDTH, BIDI_CONTROL)."""
        super().__init__(action, stages, name)
        self.kinds = frozenset(kinds)
        if not self.kinds or not self.kinds <= ALL_KINDS:
            raise ValueError(f"kinds: must be a non-empty subset of {sorted(ALL_KINDS)}, got {sorted(self.kinds)}")

    def find(self, view: str) -> list[Finding]:
        """One finding per maximal run of same-kind invisible characters in the raw text."""
        findings: list[Finding] = []
        run_kind: str | None = None
        run_start = 0
        for index, char in enumerate([*view, ""]):
            kind = invisible_kind(char) if char else None
            if kind == run_kind:
                continue
            if run_kind is not None and run_kind in self.kinds:
                findings.append(self._finding(view, run_kind, run_start, index))
            run_kind, run_start = kind, index
        return findings

    @staticmethod
    def _finding(text: str, kind: str, start: int, end: int) -> Finding:
        run = text[start:end]
        if kind == "UNICODE_TAG":
            hidden = "".join(chr(ord(c) - TAG_RANGE.start) for c in run if 0x20 <= ord(c) - TAG_RANGE.start < 0x7F)
            detail = f"hidden text {hidden!r}"
        else:
            detail = ", ".join(f"U+{ord(c):04X}" for c in run[:8]) + (" ..." if len(run) > 8 else "")
        return Finding(kind, start, end, detail, replacement="")
