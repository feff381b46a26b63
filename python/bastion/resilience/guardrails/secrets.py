"""Secrets guard over the shared secret detectors (``bastion.resilience.detectors.secrets``)."""

from __future__ import annotations

from collections.abc import Iterable

from bastion.resilience.detectors import GENERIC_MIN_ENTROPY, SECRET_PATTERNS, Finding, find_secrets
from bastion.resilience.guardrails.base import BOTH_STAGES, SpanGuard


class SecretsGuard(SpanGuard):
    """Finds credentials; blocks by default.

    ``GENERIC_API_KEY`` needs a key-like name (``api_key=``, ``token:``, ``password=``...) followed by a
    value of at least 8 characters whose Shannon entropy reaches ``min_entropy`` bits per character, so
    placeholders like ``xxxxxxxxxxxxxxxx`` pass. The default threshold is the one the audit trail
    redacts at.
    """

    name = "secrets"

    def __init__(self, kinds: Iterable[str] = tuple(SECRET_PATTERNS), action: str = "block",
                 min_entropy: float = GENERIC_MIN_ENTROPY, stages: Iterable[str] = BOTH_STAGES,
                 name: str | None = None) -> None:
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
        return find_secrets(view, self.kinds, self.min_entropy)
