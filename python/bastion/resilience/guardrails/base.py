"""Guardrail vocabulary: findings, decisions, the ``Guardrail`` protocol and a base for span detectors.

A guard reports *findings* (what it saw, where) and its configured *action* decides what happens:
``block`` refuses the text, ``redact`` replaces each finding with ``[REDACTED:KIND]``, ``log`` lets the
text through unchanged but records the decision. A guard with no finding always answers ``allow``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from bastion.resilience.guardrails.normalize import detection_view

Action = Literal["allow", "block", "redact", "log"]
Stage = Literal["input", "output"]
CONFIGURABLE_ACTIONS = ("block", "redact", "log")
BOTH_STAGES: frozenset[str] = frozenset({"input", "output"})


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


@dataclass(frozen=True)
class GuardDecision:
    """What one guard decided about one text.

    ``text`` is the text as this guard alone would release it: redacted when ``action`` is ``redact``,
    otherwise the text it was given.
    """

    guard: str
    stage: Stage
    action: Action
    findings: list[Finding] = field(default_factory=list)
    text: str = ""

    @property
    def triggered(self) -> bool:
        """Whether the guard found anything."""
        return bool(self.findings)


@runtime_checkable
class Guardrail(Protocol):
    """Anything with a ``name``, an ``action`` and a ``check``; a guard may also set ``stages`` (the
    stages it applies to) and ``needs_full_text`` (True: only meaningful on a complete output, so
    streaming runs it at the end)."""

    name: str
    action: Action

    def check(self, text: str, stage: Stage) -> GuardDecision:
        """Inspect ``text`` at ``stage`` and return the decision."""
        ...


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


def validate_action(action: str, allowed: Sequence[str] = CONFIGURABLE_ACTIONS) -> None:
    """Raise a ValueError naming ``action`` unless it is one of ``allowed``."""
    if action not in allowed:
        raise ValueError(f"action: must be one of {', '.join(allowed)}, got {action!r}")


class SpanGuard(ABC):
    """Base of guards that find spans of text (patterns, checksummed numbers, banned words).

    Subclasses implement :meth:`find` on the *detection view* of the text: NFKC-normalized per
    character with invisible characters removed, so full-width digits and zero-width-split words are
    still caught. Spans are mapped back to the original text, which is never rewritten except by
    redaction.
    """

    name: str = "span"
    needs_full_text: bool = False
    # False for detectors of the very characters the detection view drops (invisible text).
    uses_detection_view: bool = True

    def __init__(self, action: str = "block", stages: Iterable[str] = BOTH_STAGES, name: str | None = None) -> None:
        """Configure the action on a finding and the stages (``input``/``output``) the guard applies to."""
        validate_action(action)
        self.action: Action = action  # type: ignore[assignment]
        self.stages = frozenset(stages)
        if not self.stages or not self.stages <= BOTH_STAGES:
            raise ValueError(f"stages: must be a non-empty subset of input/output, got {sorted(self.stages)}")
        if name is not None:
            self.name = name

    @abstractmethod
    def find(self, view: str) -> list[Finding]:
        """Findings in the detection view ``view`` (offsets into ``view``)."""

    def check(self, text: str, stage: Stage) -> GuardDecision:
        """Run :meth:`find` and turn its findings into a decision with this guard's action."""
        if stage not in self.stages:
            return GuardDecision(self.name, stage, "allow", [], text)
        if self.uses_detection_view:
            view, origin = detection_view(text)
            findings = [Finding(f.kind, origin[f.start], origin[f.end - 1] + 1, f.detail, f.replacement)
                        for f in self.find(view) if f.end > f.start]
        else:
            findings = [f for f in self.find(text) if f.end > f.start]
        if not findings:
            return GuardDecision(self.name, stage, "allow", [], text)
        released = apply_redactions(text, findings) if self.action == "redact" else text
        return GuardDecision(self.name, stage, self.action, findings, released)
