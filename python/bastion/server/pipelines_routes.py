"""Pipelines over HTTP: ``GET /v1/pipelines`` lists the service's named pipelines, ``POST
/v1/pipelines/{name}/runs`` runs one on the service's Gateway (so every model step is limited,
guarded and audited like a direct request) and answers the run's result: every step's output,
status, latency and tokens, and the run's own status (completed, failed, budget_exceeded)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from bastion.server.auth import Principal
from bastion.server.errors import APIError
from bastion.server.routes import ERROR_RESPONSES, RequestIdDep, StateDep, require
from bastion.server.state import ServerState

router = APIRouter()
GenerateKey = Annotated[Principal, Depends(require("generate"))]


class PipelineRunRequest(BaseModel):
    """``POST /v1/pipelines/{name}/runs``: the run's inputs (the templates' fields)."""

    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = Field(None, max_length=128, description="default: the request id")


class PipelineList(BaseModel):
    """The pipelines this service runs."""

    object: str = "list"
    data: list[str]


def _registry(state: ServerState) -> Any:
    state.serving_gateway()
    if state.pipelines is None:
        raise APIError(404, "pipelines: this service has none (start it with --pipelines FILE.yaml)")
    return state.pipelines


@router.get("/v1/pipelines", response_model=PipelineList, responses=ERROR_RESPONSES)
async def list_pipelines(state: StateDep, _: GenerateKey) -> PipelineList:
    """The names of the service's pipelines."""
    return PipelineList(data=list(_registry(state)))


@router.post("/v1/pipelines/{name}/runs", response_model=dict[str, Any], responses=ERROR_RESPONSES)
async def run_pipeline(name: str, body: PipelineRunRequest, state: StateDep, rid: RequestIdDep,
                       principal: GenerateKey) -> dict[str, Any]:
    """Run pipeline ``name`` with ``inputs``; its result with every step's output, latency and tokens."""
    from bastion.pipeline import PipelineError

    registry = _registry(state)
    if name not in registry:
        raise APIError(404, f"name: no pipeline {name!r}; GET /v1/pipelines lists them", param="name",
                       code="pipeline_not_found")
    try:
        result = await registry.run(name, body.inputs, user=principal.user, tenant=principal.tenant,
                                    run_id=body.run_id or rid)
    except (PipelineError, ValueError) as e:
        raise APIError(400, f"inputs: {e}", param="inputs") from None
    out: dict[str, Any] = result.to_dict()
    return out
