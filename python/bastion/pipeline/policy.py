"""Per-step policy: retries with exponential backoff, a timeout per attempt, a fallback, caching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fallback:
    """What a step does once its attempts are spent: run again on ``backend`` (model steps), or else
    take ``value`` as its output."""

    backend: str | None = None
    value: Any = None

    def describe(self) -> dict[str, Any]:
        """JSON form (part of the step's definition, so of its cache key)."""
        return {"backend": self.backend} if self.backend is not None else {"value": self.value}


@dataclass(frozen=True)
class StepPolicy:
    """``retries`` more attempts after a failure, waiting ``backoff_s * 2**k`` (at most ``max_backoff_s``)
    before retry k; each attempt may take ``timeout_s``; then ``fallback``. ``cache``: look the result up
    in the run's cache (and store it there) by the content hash of the step and its inputs."""

    retries: int = 0
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    timeout_s: float | None = None
    fallback: Fallback | None = None
    cache: bool = True

    def __post_init__(self) -> None:
        """Check the values, naming the bad field."""
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")
        for name in ("backoff_s", "max_backoff_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {self.timeout_s!r}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 = the first retry)."""
        return min(self.max_backoff_s, self.backoff_s * 2.0**retry)

    def describe(self) -> dict[str, Any]:
        """The parts that change a step's result (the fallback); retries and timeouts do not."""
        return {"fallback": self.fallback.describe() if self.fallback is not None else None}
