"""Deny lists: banned substrings (or whole words) and banned regular expressions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from bastion.resilience.detectors import Finding
from bastion.resilience.guardrails.base import BOTH_STAGES, SpanGuard


class RegexGuard(SpanGuard):
    """Finds matches of named regular expressions; the name is the finding's kind.

    Patterns run on the detection view with Python's backtracking engine: keep them linear (no nested
    quantifiers) when they face untrusted text.
    """

    name = "regex"

    def __init__(self, patterns: Mapping[str, str | re.Pattern[str]], action: str = "block",
                 stages: Iterable[str] = BOTH_STAGES, name: str | None = None) -> None:
        """``patterns`` maps a kind (e.g. ``"INTERNAL_HOST"``) to a pattern string or compiled pattern."""
        super().__init__(action, stages, name)
        if not patterns:
            raise ValueError("patterns: at least one pattern is needed")
        self.patterns: dict[str, re.Pattern[str]] = {}
        for kind, pattern in patterns.items():
            try:
                self.patterns[kind] = re.compile(pattern) if isinstance(pattern, str) else pattern
            except re.error as exc:
                raise ValueError(f"patterns[{kind!r}]: invalid regular expression: {exc}") from exc

    def find(self, view: str) -> list[Finding]:
        """Every non-empty match of every pattern."""
        return [Finding(kind, m.start(), m.end(), f"matched {kind}")
                for kind, regex in self.patterns.items() for m in regex.finditer(view) if m.end() > m.start()]


class BannedSubstringsGuard(RegexGuard):
    """Finds any of ``substrings`` (kind ``BANNED``), case-insensitively unless ``case_sensitive``.

    With ``whole_words`` a substring only matches between word boundaries (``ass`` does not hit
    ``class``). All substrings compile into one alternation, longest first, so the text is scanned once.
    """

    name = "banned_substrings"

    def __init__(self, substrings: Iterable[str], action: str = "block", case_sensitive: bool = False,
                 whole_words: bool = False, stages: Iterable[str] = BOTH_STAGES, name: str | None = None) -> None:
        """Ban every string of ``substrings`` (empty strings are rejected)."""
        words = sorted(set(substrings), key=len, reverse=True)
        if not words or any(not w for w in words):
            raise ValueError("substrings: must be a non-empty list of non-empty strings")
        alternation = "|".join(re.escape(w) for w in words)
        pattern = rf"\b(?:{alternation})\b" if whole_words else alternation
        super().__init__({"BANNED": re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)},
                         action, stages, name)
