"""Fixtures of the resilience tests."""

from __future__ import annotations

import pytest

from .resilience_helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock starting at t=1000 s."""
    return FakeClock()
