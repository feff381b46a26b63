"""Helpers shared by the gateway tests: a fake clock, audit reading, quick breaker settings."""

from __future__ import annotations

import json
from pathlib import Path

from bastion.resilience.breaker import BreakerConfig


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def read_records(path: Path) -> list[dict]:
    """The audit records written so far (the gateway awaited their acks, so they are on disk)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# Opens after 2 calls with >= 50% failures; stays open 10 s of the fake clock; one probe in half-open.
QUICK_BREAKER = BreakerConfig(sliding_window_size=4, minimum_number_of_calls=2, failure_rate_threshold=50.0,
                              wait_duration_in_open_state=10.0, permitted_number_of_calls_in_half_open_state=1)
