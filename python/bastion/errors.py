"""Errors a caller can catch. Every error raised on purpose by bastion derives from BastionError."""

from __future__ import annotations


class BastionError(Exception):
    """Base class of bastion's own errors."""


class Overloaded(BastionError):
    """Admission refused: the engine's bounded queue (requests or tokens) is full."""


class RateLimited(BastionError):
    """A per-user or per-tenant rate limit refused the request.

    ``retry_after`` is the number of seconds after which the same request would be admitted.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GuardrailViolation(BastionError):
    """A blocking guardrail refused the input or the output."""

    def __init__(self, message: str, decisions: list | None = None) -> None:
        super().__init__(message)
        self.decisions = decisions or []


class PromptTooLong(BastionError, ValueError):
    """The prompt does not fit the engine's context window (``max_model_len``).

    A ValueError like every other bad input; its own type lets the Gateway fall back to a backend
    with a larger window instead of failing the request.
    """


class ModelLoadError(BastionError):
    """The model file is missing, corrupt or of an unsupported architecture."""


class EngineDead(BastionError):
    """The engine loop stopped (closed or crashed) and cannot serve requests."""
