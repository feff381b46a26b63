"""PII guard over the shared recognizers (``bastion.resilience.detectors.pii``): cards, IBANs, e-mails, phones."""

from __future__ import annotations

from collections.abc import Iterable

from bastion.resilience.detectors import PII_RECOGNIZERS, Finding, find_pii
from bastion.resilience.guardrails.base import BOTH_STAGES, SpanGuard


class PiiGuard(SpanGuard):
    """Finds the selected PII ``entities`` (CARD, IBAN, EMAIL, PHONE); redacts by default."""

    name = "pii"

    def __init__(self, entities: Iterable[str] = tuple(PII_RECOGNIZERS), action: str = "redact",
                 stages: Iterable[str] = BOTH_STAGES, name: str | None = None) -> None:
        """Detect ``entities`` (recognized in the fixed order CARD, IBAN, EMAIL, PHONE)."""
        super().__init__(action, stages, name)
        wanted = set(entities)
        unknown = wanted - set(PII_RECOGNIZERS)
        if unknown or not wanted:
            raise ValueError(f"entities: must be a non-empty subset of {list(PII_RECOGNIZERS)}, got {sorted(wanted)}")
        self.entities = [entity for entity in PII_RECOGNIZERS if entity in wanted]

    def find(self, view: str) -> list[Finding]:
        """All non-overlapping findings, earlier recognizers winning."""
        return find_pii(view, self.entities)
