"""Per-run budgets: tokens (prompt + output of every model call) and wall time."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """Limits of one run; None means unlimited. A run stops starting steps once a limit is reached
    and cancels what is in flight when the time limit passes."""

    max_tokens: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        """Check the values, naming the bad field."""
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or self.max_tokens < 1):
            raise ValueError(f"max_tokens must be an int >= 1 or None, got {self.max_tokens!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {self.max_seconds!r}")


class BudgetMeter:
    """What a run has spent against its ``Budget``."""

    def __init__(self, budget: Budget) -> None:
        """Start the clock now."""
        self.budget = budget
        self.started = time.monotonic()
        self.prompt_tokens = 0
        self.output_tokens = 0

    @property
    def tokens(self) -> int:
        """Tokens spent so far (prompt + output)."""
        return self.prompt_tokens + self.output_tokens

    def add(self, prompt_tokens: int, output_tokens: int) -> None:
        """Count one model call's tokens."""
        self.prompt_tokens += prompt_tokens
        self.output_tokens += output_tokens

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def seconds_left(self) -> float | None:
        """Seconds until the time budget ends (may be <= 0), or None without one."""
        if self.budget.max_seconds is None:
            return None
        return self.budget.max_seconds - self.elapsed()

    def exceeded(self) -> str | None:
        """Why the run must stop now, or None while both limits hold."""
        b = self.budget
        if b.max_tokens is not None and self.tokens >= b.max_tokens:
            return f"token budget exhausted: {self.tokens} tokens used of {b.max_tokens}"
        left = self.seconds_left()
        if left is not None and left <= 0:
            return f"time budget exhausted: {self.elapsed():.2f} s used of {b.max_seconds} s"
        return None
