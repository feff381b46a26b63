"""Circuit breakers with Resilience4j semantics: ``CircuitBreaker`` (circuit.py), its ``BreakerConfig`` and
``HealthPolicy`` (config.py), permits and the call guard (permit.py), states, transitions, metrics and the
rejection error (state.py), and the sliding windows of outcomes (window.py)."""

from __future__ import annotations

from bastion.resilience.breaker.circuit import CircuitBreaker
from bastion.resilience.breaker.config import BreakerConfig, HealthPolicy
from bastion.resilience.breaker.permit import BreakerGuard, Permit
from bastion.resilience.breaker.state import BreakerMetrics, BreakerState, CallNotPermitted, StateTransition

__all__ = [
    "BreakerConfig", "BreakerGuard", "BreakerMetrics", "BreakerState", "CallNotPermitted", "CircuitBreaker",
    "HealthPolicy", "Permit", "StateTransition",
]
