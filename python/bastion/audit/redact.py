"""Redaction of secrets and PII before text reaches the audit trail.

The audit trail is kept for months and copied around (exports, backups), so under the default
"hashed" content policy it must never hold a credential, a card number or other PII in clear. It
redacts exactly what the guardrails detect (``bastion.resilience.detectors.find_sensitive``): well-known
key formats, private-key blocks, bearer/JWT tokens, keyword-tagged secrets, card numbers that pass the
Luhn check (so order numbers and timestamps are left alone), IBANs, e-mail addresses and phone numbers.
"""

from __future__ import annotations

import dataclasses

from bastion.resilience.detectors import apply_redactions, find_sensitive, luhn_valid

__all__ = ["TRAIL_LABELS", "luhn_valid", "redact", "trail_label"]

# The labels the trail has always written for these detector kinds; any other kind is written lower-case.
TRAIL_LABELS = {
    "AWS_ACCESS_KEY": "aws_key", "OPENAI_KEY": "api_key", "GENERIC_API_KEY": "secret_assignment",
    "GOOGLE_API_KEY": "google_key", "BEARER_TOKEN": "bearer",
}


def trail_label(kind: str) -> str:
    """The label a finding of detector ``kind`` gets in the trail's ``[REDACTED:<label>]`` markers."""
    return TRAIL_LABELS.get(kind, kind.lower())


def redact(text: str) -> str:
    """Return ``text`` with every secret and PII finding replaced by ``[REDACTED:<label>]``.

    Overlapping findings merge into one marker, so a key that happens to contain a digit run is removed
    whole. A marker ends a word, so the text beside it can reveal a finding its span hid (the e-mail in
    ``bob@ex.com4111 1111 1111 1111`` once the card is gone): redaction repeats until the detectors find
    nothing, which also makes it idempotent.
    """
    if not isinstance(text, str):
        raise TypeError(f"redact: expected str, got {type(text).__name__}")
    while findings := find_sensitive(text):
        text = apply_redactions(text, [dataclasses.replace(f, replacement=f"[REDACTED:{trail_label(f.kind)}]")
                                       for f in findings])
    return text
