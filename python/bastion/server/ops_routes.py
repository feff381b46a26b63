"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from bastion.server.auth import AuthError, authorize
from bastion.server.errors import APIError
from bastion.server.routes import ERROR_RESPONSES, StateDep

router = APIRouter()


@router.get("/health", responses={200: {"description": "the process is alive"}})
async def health() -> dict[str, str]:
    """Liveness: the process answers (even while loading or draining)."""
    return {"status": "ok"}


@router.get("/ready", responses={200: {"description": "ready for work"},
                                 503: {"description": "loading, draining or engine dead"}})
async def ready(state: StateDep) -> Any:
    """Readiness: 200 once the model is loaded; 503 while loading, draining, or when the engine is dead."""
    reason = state.not_ready_reason()
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return {"status": "ready", "model": state.model_name}


@router.get("/metrics", responses={**ERROR_RESPONSES, 200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                                            "description": "Prometheus text format"}})
async def metrics(request: Request, state: StateDep, authorization: Annotated[str | None, Header()] = None,
                  x_api_key: Annotated[str | None, Header()] = None) -> Response:
    """Prometheus metrics: the engine's (vLLM's names), the Gateway's and the HTTP layer's."""
    if state.config.metrics_require_key:
        try:
            authorize(state.keys, authorization, x_api_key, "admin")
        except AuthError as e:
            raise APIError(e.status, str(e)) from None
    if state.registry is None:
        raise APIError(404, "metrics: prometheus-client is not installed")
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
