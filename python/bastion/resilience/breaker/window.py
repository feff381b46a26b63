"""Sliding windows of call outcomes for the circuit breaker: by count (a ring) or by time (1 s buckets).

Both keep running totals, so recording and reading a snapshot cost O(1) amortized and memory depends
only on the window size, never on the number of calls. They are not thread-safe on their own: the
breaker calls them under its lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One finished call: whether it failed and whether it was slower than the slow-call threshold."""

    failed: bool
    slow: bool


@dataclass(frozen=True)
class WindowSnapshot:
    """Totals of a window at one instant."""

    calls: int
    failed_calls: int
    slow_calls: int

    @property
    def failure_rate(self) -> float:
        """Failed calls as a percentage of buffered calls (0 when empty)."""
        return 100.0 * self.failed_calls / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Slow calls (failed or not) as a percentage of buffered calls (0 when empty)."""
        return 100.0 * self.slow_calls / self.calls if self.calls else 0.0


class CountWindow:
    """The last ``size`` outcomes, in a fixed ring."""

    def __init__(self, size: int) -> None:
        """Create an empty window holding at most ``size`` outcomes."""
        self._ring: list[Outcome | None] = [None] * size
        self._next = 0
        self._calls = self._failed = self._slow = 0

    def record(self, outcome: Outcome, now: float) -> WindowSnapshot:
        """Add ``outcome`` (evicting the oldest one when full) and return the new totals."""
        evicted = self._ring[self._next]
        if evicted is not None:
            self._add(evicted, -1)
        self._ring[self._next] = outcome
        self._add(outcome, +1)
        self._next = (self._next + 1) % len(self._ring)
        return self.snapshot(now)

    def snapshot(self, now: float) -> WindowSnapshot:
        """Current totals (``now`` is unused: a count window does not age)."""
        return WindowSnapshot(self._calls, self._failed, self._slow)

    def _add(self, outcome: Outcome, sign: int) -> None:
        self._calls += sign
        self._failed += sign * outcome.failed
        self._slow += sign * outcome.slow


class TimeWindow:
    """Outcomes of the last ``size_s`` whole seconds, aggregated per epoch second.

    Bucket ``i`` holds the second ``s`` with ``s % size_s == i``; moving forward clears the buckets of
    the seconds that left the window and subtracts them from the totals (Resilience4j's
    ``SlidingTimeWindowMetrics``).
    """

    def __init__(self, size_s: int) -> None:
        """Create an empty window spanning ``size_s`` seconds."""
        self._size = size_s
        self._buckets = [[0, 0, 0] for _ in range(size_s)]  # calls, failed, slow
        self._head: int | None = None  # the newest second the buckets describe
        self._totals = [0, 0, 0]

    def record(self, outcome: Outcome, now: float) -> WindowSnapshot:
        """Add ``outcome`` to the bucket of second ``floor(now)`` and return the new totals."""
        self._advance(now)
        bucket = self._buckets[math.floor(now) % self._size]
        for index, value in enumerate((1, int(outcome.failed), int(outcome.slow))):
            bucket[index] += value
            self._totals[index] += value
        return WindowSnapshot(*self._totals)

    def snapshot(self, now: float) -> WindowSnapshot:
        """Totals of the seconds ``(floor(now) - size_s, floor(now)]``."""
        self._advance(now)
        return WindowSnapshot(*self._totals)

    def _advance(self, now: float) -> None:
        second = math.floor(now)
        if self._head is None:
            self._head = second
            return
        if second <= self._head:
            return  # same second (or a clock that did not move): nothing ages out
        # Clear at most one full lap of buckets, however long the gap was.
        for stale in range(self._head + 1, min(second, self._head + self._size) + 1):
            bucket = self._buckets[stale % self._size]
            for index in range(3):
                self._totals[index] -= bucket[index]
                bucket[index] = 0
        self._head = second


def make_window(kind: str, size: int) -> CountWindow | TimeWindow:
    """A fresh window of ``kind`` (``"count"`` or ``"time"``) and ``size`` (calls or seconds)."""
    return CountWindow(size) if kind == "count" else TimeWindow(size)
