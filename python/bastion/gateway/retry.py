"""Retry policy per error class (LiteLLM's ``retry_policy`` idea, one retry loop: the Gateway's).

For each backend in route order the Gateway makes ``1 + retries_for(error_class)`` attempts,
sleeping ``delay()`` between them (exponential with jitter, or the upstream's Retry-After), then
falls back to the next backend. Classes in ``fatal`` stop the request at once: retrying or
falling back cannot fix a request that is itself invalid.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

ERROR_CLASSES = frozenset({
    "timeout", "connection", "rate_limited", "server_error", "malformed", "context_window", "auth",
    "bad_request", "overloaded", "open_breaker", "guardrail", "internal",
})

_DEFAULT_RETRIES = MappingProxyType({"connection": 1, "server_error": 1, "rate_limited": 1})


@dataclass(frozen=True)
class RetryPolicy:
    """How many extra tries each error class gets on the same backend, and how long to wait.

    ``retries``: error class -> extra attempts on the same backend (missing classes get 0).
    ``backoff_base_s`` doubles per retry up to ``backoff_max_s``; ``jitter`` (0..1) scales it by a
    random factor in ``[1 - jitter, 1]``. A Retry-After from the upstream wins, capped at
    ``backoff_max_s``. ``fallback_on_block``: a blocking output guardrail moves on to the next
    backend (continuing after the text already sent) instead of refusing at once.
    """

    retries: Mapping[str, int] = field(default_factory=lambda: dict(_DEFAULT_RETRIES))
    backoff_base_s: float = 0.05
    backoff_max_s: float = 2.0
    jitter: float = 0.5
    fallback_on_block: bool = True
    fatal: frozenset[str] = frozenset({"bad_request"})

    def __post_init__(self) -> None:
        unknown = (set(self.retries) | set(self.fatal)) - ERROR_CLASSES
        if unknown:
            raise ValueError(f"retry_policy: unknown error class(es) {sorted(unknown)}; "
                             f"known: {sorted(ERROR_CLASSES)}")
        bad = {k: v for k, v in self.retries.items() if not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"retry_policy.retries: counts must be integers >= 0, got {bad}")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ValueError("retry_policy: need 0 <= backoff_base_s <= backoff_max_s")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"retry_policy.jitter must be in [0, 1], got {self.jitter}")

    def retries_for(self, error_class: str) -> int:
        """Extra attempts on the same backend after an error of ``error_class``."""
        return self.retries.get(error_class, 0)

    def delay(self, retry_number: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1 = first retry)."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max_s)
        base = min(self.backoff_max_s, self.backoff_base_s * (2 ** (retry_number - 1)))
        return base * (1 - self.jitter * (rng or random).random())
