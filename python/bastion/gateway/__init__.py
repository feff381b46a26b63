"""Gateway: backends (local AsyncLLM, OpenAI-compatible HTTP), routing, fallback, guardrails, audit."""

from __future__ import annotations

from bastion.gateway.attempt import Timeouts
from bastion.gateway.backend import Backend, LocalBackend
from bastion.gateway.errors import (
    AllBackendsFailed,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextWindowExceeded,
    MalformedResponse,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamServerError,
)
from bastion.gateway.gateway import Gateway
from bastion.gateway.hedging import HedgePolicy
from bastion.gateway.hooks import HookEvent, Hooks
from bastion.gateway.openai_backend import OpenAIBackend
from bastion.gateway.retry import RetryPolicy
from bastion.gateway.telemetry import Telemetry
from bastion.gateway.types import BackendChunk, BackendHealth, BackendRequest, GatewayDelta, GatewayResult

__all__ = [
    "AllBackendsFailed", "Backend", "BackendChunk", "BackendError", "BackendHealth", "BackendRequest",
    "BackendTimeout", "BackendUnavailable", "BadRequest", "ContextWindowExceeded", "Gateway", "GatewayDelta",
    "GatewayResult", "HedgePolicy", "HookEvent", "Hooks", "LocalBackend", "MalformedResponse", "OpenAIBackend", "RetryPolicy",
    "Telemetry", "Timeouts", "UpstreamAuthError", "UpstreamRateLimited", "UpstreamServerError",
]
