"""The one set of secret and PII detectors, shared by the guardrails and the audit trail.

Guards (``bastion.resilience.guardrails``) decide what to do about a finding (block, redact, log); the
audit trail (``bastion.audit.redact``) redacts every finding of ``find_sensitive`` before text is
stored. Both see the same findings for the same text, so they agree on what a secret is. This package
depends on nothing else in bastion.
"""

from __future__ import annotations

from bastion.resilience.detectors.checksums import iban_valid, luhn_valid
from bastion.resilience.detectors.findings import Detector, Finding, apply_redactions, find_in, placeholder
from bastion.resilience.detectors.normalize import detection_view
from bastion.resilience.detectors.pii import PII_RECOGNIZERS, find_pii
from bastion.resilience.detectors.secrets import (
    GENERIC_MIN_ENTROPY,
    SECRET_PATTERNS,
    find_secrets,
    shannon_entropy,
)


def find_sensitive(text: str) -> list[Finding]:
    """Every secret and every PII entity in ``text`` at the detectors' defaults (offsets into ``text``):
    what the default secrets and PII guards report together."""
    return find_in(text, lambda view: find_secrets(view) + find_pii(view))


__all__ = [
    "GENERIC_MIN_ENTROPY", "PII_RECOGNIZERS", "SECRET_PATTERNS", "Detector", "Finding", "apply_redactions",
    "detection_view", "find_in", "find_pii", "find_secrets", "find_sensitive", "iban_valid", "luhn_valid",
    "placeholder", "shannon_entropy",
]
