"""Backend error classes and the mapping from any exception to a retry/fallback error class.

The error class (a short string) is what ``RetryPolicy`` and the audit trail speak: the Gateway
decides per class whether to retry the same backend, fall back to the next, or give up.
"""

from __future__ import annotations

import asyncio

from bastion.errors import BastionError, GuardrailViolation, Overloaded, RateLimited
from bastion.resilience.breaker import CallNotPermitted


class BackendError(BastionError):
    """A backend could not produce (the rest of) an answer. ``error_class`` drives retry/fallback."""

    error_class = "internal"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendTimeout(BackendError):
    """No first token, no next token or no end within the allowed time."""

    error_class = "timeout"


class BackendUnavailable(BackendError):
    """The backend could not be reached (connection refused/reset, DNS)."""

    error_class = "connection"


class UpstreamRateLimited(BackendError):
    """The upstream answered 429; ``retry_after`` carries its Retry-After header when present."""

    error_class = "rate_limited"


class UpstreamServerError(BackendError):
    """The upstream answered 5xx."""

    error_class = "server_error"


class MalformedResponse(BackendError):
    """The upstream answered something that is not the expected JSON / SSE."""

    error_class = "malformed"


class ContextWindowExceeded(BackendError):
    """Prompt plus max_tokens does not fit the backend's context window."""

    error_class = "context_window"


class UpstreamAuthError(BackendError):
    """The upstream refused our credentials (401/403)."""

    error_class = "auth"


class BadRequest(BackendError):
    """The request itself is invalid (400 not about context length): no backend will accept it."""

    error_class = "bad_request"


class AllBackendsFailed(BastionError):
    """Every backend (and every retry) failed. ``attempts`` lists what happened on each."""

    def __init__(self, message: str, attempts: list, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.timed_out = timed_out


def error_class_of(exc: BaseException) -> str:
    """The retry/fallback class of ``exc`` (``"internal"`` when unknown)."""
    if isinstance(exc, BackendError):
        return exc.error_class
    if isinstance(exc, Overloaded):
        return "overloaded"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, GuardrailViolation):
        return "guardrail"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, ValueError):
        return "bad_request"
    if isinstance(exc, CallNotPermitted):
        return "open_breaker"
    return "internal"
