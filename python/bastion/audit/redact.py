"""Redaction of secrets and payment cards before text reaches the audit trail.

The audit trail is kept for months and copied around (exports, backups), so under the default
"hashed" content policy it must never hold a credential or a card number in clear. These patterns
are the model-free, offline subset that the research notes (RESILIENCE.md a3b) list: well-known
key formats, private-key blocks, bearer/JWT tokens, ``key=value`` style secrets, e-mail addresses
and card numbers that pass the Luhn check (so order numbers and timestamps are left alone).
"""

from __future__ import annotations

import re
from collections.abc import Callable

# (label, pattern): each match is replaced by "[REDACTED:<label>]".
_SECRET_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private_key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)),
    ("aws_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("api_key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b")),
    ("google_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}")),
    ("secret_assignment",
     re.compile(r"(?i)\b(?:password|passwd|pwd|secret|token|api[_-]?key)\b\s*[:=]\s*[\"']?[^\s\"']{6,}")),
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
]

# 13-19 digits, optionally grouped by single spaces or dashes.
_CARD_CANDIDATE = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _redact_card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return "[REDACTED:card]" if luhn_valid(digits) else match.group(0)


def _label_replacer(label: str) -> Callable[[re.Match[str]], str]:
    return lambda _m: f"[REDACTED:{label}]"


def redact(text: str) -> str:
    """Return ``text`` with secrets, e-mail addresses and Luhn-valid card numbers replaced.

    Secrets are replaced first so a key that happens to contain a digit run is removed whole.
    """
    if not isinstance(text, str):
        raise TypeError(f"redact: expected str, got {type(text).__name__}")
    for label, pattern in _SECRET_PATTERNS:
        text = pattern.sub(_label_replacer(label), text)
    return _CARD_CANDIDATE.sub(_redact_card, text)
