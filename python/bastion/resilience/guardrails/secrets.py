"""Secrets guard: cloud keys, private key blocks, service tokens, JWTs and keyword-tagged high-entropy values."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from bastion.resilience.guardrails.base import BOTH_STAGES, Finding, SpanGuard

# kind -> pattern; a pattern with a group reports only the group (keeps "api_key=" readable after redaction).
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "AWS_ACCESS_KEY": re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b"),
    # A private key block up to its END line, or to the end of the text while the END line is not there yet.
    "PRIVATE_KEY": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
                              r"[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)"),
    "GITHUB_TOKEN": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    "SLACK_TOKEN": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,250}"),
    "SLACK_WEBHOOK": re.compile(r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"),
    "OPENAI_KEY": re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "GENERIC_API_KEY": re.compile(
        r"(?i)\b(?:api[_-]?key|api[_-]?secret|secret[_-]?key|client[_-]?secret|access[_-]?key(?:[_-]?id)?"
        r"|auth[_-]?token|access[_-]?token|token|secret|passw(?:or)?d)\b[\"']?\s*[:=]\s*[\"']?"
        r"([A-Za-z0-9_\-/+=.]{16,})"),
}


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value`` (0 for an empty string)."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values()) if value else 0.0


class SecretsGuard(SpanGuard):
    """Finds credentials; blocks by default.

    ``GENERIC_API_KEY`` needs a key-like name (``api_key=``, ``token:``, ``password=``...) followed by a
    value of at least 16 characters whose Shannon entropy reaches ``min_entropy`` bits per character, so
    ``password = correcthorsebattery`` style prose and placeholders like ``xxxxxxxxxxxxxxxx`` pass.
    """

    name = "secrets"

    def __init__(self, kinds: Iterable[str] = tuple(SECRET_PATTERNS), action: str = "block",
                 min_entropy: float = 3.5, stages: Iterable[str] = BOTH_STAGES, name: str | None = None) -> None:
        """Detect the secret ``kinds`` (keys of ``SECRET_PATTERNS``)."""
        super().__init__(action, stages, name)
        self.kinds = list(dict.fromkeys(kinds))
        unknown = set(self.kinds) - set(SECRET_PATTERNS)
        if unknown or not self.kinds:
            raise ValueError(f"kinds: must be a non-empty subset of {list(SECRET_PATTERNS)}, got {sorted(unknown)}")
        if min_entropy < 0:
            raise ValueError(f"min_entropy: must be >= 0, got {min_entropy}")
        self.min_entropy = min_entropy

    def find(self, view: str) -> list[Finding]:
        """Every match of the selected patterns (the value group only for keyword-tagged secrets)."""
        findings = []
        for kind in self.kinds:
            for match in SECRET_PATTERNS[kind].finditer(view):
                group = 1 if match.re.groups else 0
                if kind == "GENERIC_API_KEY" and shannon_entropy(match.group(group)) < self.min_entropy:
                    continue
                findings.append(Finding(kind, match.start(group), match.end(group), kind.lower().replace("_", " ")))
        return findings
