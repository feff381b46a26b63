"""Secret detectors: cloud keys, private key blocks, service tokens, JWTs, bearer tokens and keyword-tagged values.

Well-known key formats are matched by shape. A value after a key-like name (``api_key=``, ``token:``,
``password =`` ...) counts as a secret when it has at least 8 characters and at least
``GENERIC_MIN_ENTROPY`` bits of Shannon entropy per character, so placeholders like
``xxxxxxxxxxxxxxxx`` and ``aaaabbbb`` pass while ``hunter2hunter2`` does not.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from bastion.resilience.detectors.findings import Finding

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
    "GOOGLE_API_KEY": re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "BEARER_TOKEN": re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{16,})"),
    "GENERIC_API_KEY": re.compile(
        r"(?i)\b(?:api[_-]?key|api[_-]?secret|secret[_-]?key|client[_-]?secret|access[_-]?key(?:[_-]?id)?"
        r"|auth[_-]?token|access[_-]?token|token|secret|passw(?:or)?d|pwd)\b[\"']?\s*[:=]\s*[\"']?"
        r"([A-Za-z0-9_\-/+=.]{8,})"),
}
# Bits per character a keyword-tagged value needs to count as a secret.
GENERIC_MIN_ENTROPY = 2.5


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value`` (0 for an empty string)."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values()) if value else 0.0


def find_secrets(text: str, kinds: Iterable[str] = tuple(SECRET_PATTERNS),
                 min_entropy: float = GENERIC_MIN_ENTROPY) -> list[Finding]:
    """Every match of the ``kinds`` (keys of ``SECRET_PATTERNS``), kind after kind; a pattern with a group
    reports the group only. ``GENERIC_API_KEY`` values below ``min_entropy`` bits per character are skipped."""
    findings = []
    for kind in kinds:
        for match in SECRET_PATTERNS[kind].finditer(text):
            group = 1 if match.re.groups else 0
            if kind == "GENERIC_API_KEY" and shannon_entropy(match.group(group)) < min_entropy:
                continue
            findings.append(Finding(kind, match.start(group), match.end(group), kind.lower().replace("_", " ")))
    return findings
