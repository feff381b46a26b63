"""Guardrail vocabulary: decisions, the ``Guardrail`` protocol and a base for span detectors.

A guard reports *findings* (``bastion.resilience.detectors.Finding``: what it saw, where) and its configured *action* decides what happens:
``block`` refuses the text, ``redact`` replaces each finding with ``[REDACTED:KIND]``, ``log`` lets the
text through unchanged but records the decision. A guard with no finding always answers ``allow``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast, runtime_checkable

from bastion.resilience.detectors import Finding, apply_redactions, find_in

Action = Literal["allow", "block", "redact", "log"]
Stage = Literal["input", "output"]
CONFIGURABLE_ACTIONS = ("block", "redact", "log")
BOTH_STAGES: frozenset[str] = frozenset({"input", "output"})


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


def validate_action(action: str, allowed: Sequence[str] = CONFIGURABLE_ACTIONS) -> Action:
    """``action`` as an ``Action``; raise a ValueError naming it unless it is one of ``allowed``."""
    if action not in allowed:
        raise ValueError(f"action: must be one of {', '.join(allowed)}, got {action!r}")
    return cast(Action, action)  # every allowed list is a subset of the actions


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
        self.action: Action = validate_action(action)
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
        findings = find_in(text, self.find, self.uses_detection_view)
        if not findings:
            return GuardDecision(self.name, stage, "allow", [], text)
        released = apply_redactions(text, findings) if self.action == "redact" else text
        return GuardDecision(self.name, stage, self.action, findings, released)
