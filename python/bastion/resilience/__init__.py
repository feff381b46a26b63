"""Resilience: circuit breakers, per-user/tenant rate limits, and guardrails (``bastion.resilience.guardrails``).

All of it is in-process and offline; clocks are injectable so behaviour over time is testable exactly.
"""

from __future__ import annotations

from bastion.resilience.breaker import (
    BreakerConfig,
    BreakerMetrics,
    BreakerState,
    CallNotPermitted,
    CircuitBreaker,
    HealthPolicy,
    Permit,
    StateTransition,
)
from bastion.resilience.ratelimit import RateLimit, RateLimiter, Reservation, ReservationTooLarge

__all__ = [
    "BreakerConfig", "BreakerMetrics", "BreakerState", "CallNotPermitted", "CircuitBreaker", "HealthPolicy",
    "Permit", "RateLimit", "RateLimiter", "Reservation", "ReservationTooLarge", "StateTransition",
]
