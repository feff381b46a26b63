"""Jobs over HTTP: submit a completion or chat body, get an id at once, poll or long-poll the result.

A job runs through the same Gateway path as a direct request (so the same limits, guardrails and
audit record apply) and is kept in the durable job store: after a crash, unfinished jobs are run
again from their stored body. Tenants are isolated: another tenant's job is a 404, not a 403.
An ``Idempotency-Key`` makes a retried submit return the job it already created. When a job has a
``webhook_url``, its final state is POSTed there, signed with HMAC-SHA256 over ``timestamp.body``
(``X-Bastion-Timestamp``, ``X-Bastion-Signature: sha256=<hex>``) when a secret is configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bastion.engine.jobs import JobOutcome, JobProgress, JobRunner
from bastion.server import generation
from bastion.server.auth import Principal
from bastion.server.errors import APIError
from bastion.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    JobList,
    JobObject,
    JobRequest,
    JobResult,
)
from bastion.server.routes import ERROR_RESPONSES, RequestIdDep, StateDep, require
from bastion.server.state import ServerState
from bastion.stores.jobs import JobState

log = logging.getLogger("bastion.server.jobs")
router = APIRouter()
JobsKey = Annotated[Principal, Depends(require("jobs"))]
_BODY_MODELS: dict[str, type[CompletionRequest] | type[ChatCompletionRequest]] = {
    "/v1/completions": CompletionRequest, "/v1/chat/completions": ChatCompletionRequest}
MAX_WAIT_S = 300.0


def _parse_body(endpoint: str, body: dict[str, Any]) -> CompletionRequest | ChatCompletionRequest:
    """The job's body as its endpoint's request (400 naming ``body.<field>``); never streamed."""
    try:
        parsed = _BODY_MODELS[endpoint].model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(["body", *(str(x) for x in first["loc"])])
        raise APIError(400, f"{param}: {first['msg']}", param=param) from None
    if parsed.stream:
        raise APIError(400, "body.stream: a job is not streamed; poll GET /v1/jobs/{id}/result", param="body.stream")
    return parsed


def job_runner(state: ServerState, job: JobState) -> JobRunner | None:
    """The runner that (re)runs a stored job from its request, or None when it cannot be rebuilt."""
    request = job.request or {}
    if request.get("endpoint") not in _BODY_MODELS or not isinstance(request.get("body"), dict):
        return None
    principal = Principal(tenant=job.tenant or "default", user=request.get("user") or "anonymous",
                          scopes=frozenset({"generate", "jobs"}), key_id=request.get("key_id") or "none")
    job_id = job.job_id

    async def run(progress: JobProgress) -> JobOutcome:
        body = _parse_body(request["endpoint"], request["body"])
        plan = generation.plan_request(state, body, job_id, principal)
        produced = 0

        def on_tokens(n: int) -> None:
            nonlocal produced
            produced += n
            progress.update(output_tokens=produced)

        try:
            result = await generation.run(state, plan, principal, on_tokens=on_tokens)
        except APIError as e:
            return JobOutcome(status="failed", error=f"{e.status}: {e.message}", output_tokens=produced)
        usage = result["usage"]["completion_tokens"]
        reasons = {c.get("finish_reason") for c in result["choices"]}
        return JobOutcome(status="finished", result=result, output_tokens=usage,
                          finish_reason=reasons.pop() if len(reasons) == 1 else "mixed")

    return run


def _job_object(job: JobState, with_result: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.job_id, "object": "job", "endpoint": (job.request or {}).get("endpoint"), "status": job.status,
        "created_at": job.created_at, "updated_at": job.updated_at,
        "progress": {"output_tokens": job.output_tokens}, "attempts": job.attempts, "error": job.error}
    if with_result:
        body["result"] = job.result
    return body


def _jobs(state: ServerState) -> Any:
    state.serving_gateway()
    if state.jobs is None:
        raise APIError(503, "jobs: the job store is not open", code="not_ready")
    return state.jobs


def _own(state: ServerState, job_id: str, principal: Principal) -> JobState:
    try:
        job: JobState = _jobs(state).poll(job_id, tenant=principal.tenant)
    except KeyError:
        raise APIError(404, f"job_id: no job {job_id!r}", param="job_id", code="job_not_found") from None
    return job


@router.post("/v1/jobs", status_code=202, response_model=JobObject,
             responses={**ERROR_RESPONSES, 200: {"model": JobObject, "description": "the job an Idempotency-Key "
                                                 "already created"}, 409: ERROR_RESPONSES[400]})
async def submit_job(body: JobRequest, state: StateDep, rid: RequestIdDep, principal: JobsKey,
                     idempotency_key: Annotated[str | None, Header(max_length=256)] = None) -> Any:
    """Queue a completion or chat body; 202 with the job id at once (200 with the same job on a retry)."""
    manager = _jobs(state)
    parsed = _parse_body(body.endpoint, body.body)
    job_id = f"job-{uuid.uuid4().hex}"
    generation.plan_request(state, parsed, job_id, principal)  # 400/404/413 now, before the job exists
    request = {"endpoint": body.endpoint, "body": body.body, "webhook_url": body.webhook_url,
               "user": principal.user, "key_id": principal.key_id, "http_request_id": rid}
    pending = JobState(job_id, "queued", tenant=principal.tenant, request=request)
    runner = job_runner(state, pending)
    assert runner is not None  # the request was just checked
    job: JobState = await manager.submit(runner, tenant=principal.tenant, idempotency_key=idempotency_key,
                                         request=request, job_id=job_id,
                                         on_complete=completion_hook(state))
    if job.job_id != job_id:  # an earlier submit with the same key
        earlier = job.request or {}
        if (earlier.get("endpoint"), earlier.get("body")) != (body.endpoint, body.body):
            raise APIError(409, "Idempotency-Key: already used for a different request", param="Idempotency-Key",
                           code="idempotency_conflict")
        return JSONResponse(_job_object(job), status_code=200)
    return JSONResponse(_job_object(job), status_code=202)


@router.get("/v1/jobs", response_model=JobList, responses=ERROR_RESPONSES)
async def list_jobs(state: StateDep, principal: JobsKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """The caller's tenant's jobs, newest first."""
    jobs = _jobs(state).list(tenant=principal.tenant, limit=limit)
    return {"object": "list", "data": [_job_object(j) for j in jobs]}


@router.get("/v1/jobs/{job_id}", response_model=JobObject, responses=ERROR_RESPONSES)
async def get_job(job_id: str, state: StateDep, principal: JobsKey) -> Any:
    """A job's state and progress."""
    return _job_object(_own(state, job_id, principal))


@router.get("/v1/jobs/{job_id}/result", response_model=JobResult,
            responses={**ERROR_RESPONSES, 202: {"model": JobResult, "description": "not finished yet"}})
async def job_result(job_id: str, state: StateDep, principal: JobsKey,
                     wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0) -> Any:
    """The job with its result; waits up to ``wait`` seconds for it to end (202 if it has not)."""
    job = _own(state, job_id, principal)
    if not job.done and wait > 0:
        try:
            job = await _jobs(state).result(job_id, wait, tenant=principal.tenant)
        except TimeoutError:
            job = _own(state, job_id, principal)
    return JSONResponse(_job_object(job, with_result=True), status_code=200 if job.done else 202)


@router.delete("/v1/jobs/{job_id}", response_model=JobObject, responses=ERROR_RESPONSES)
async def cancel_job(job_id: str, state: StateDep, principal: JobsKey) -> Any:
    """Cancel a job: its engine request is aborted and its KV blocks freed (a finished job is left as is)."""
    _own(state, job_id, principal)
    job = await _jobs(state).cancel(job_id, tenant=principal.tenant)
    return _job_object(job)


def sign_webhook(secret: str, timestamp: str, payload: bytes) -> str:
    """The ``X-Bastion-Signature`` value: ``sha256=`` + HMAC-SHA256(secret, timestamp + "." + payload)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + payload, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def completion_hook(state: ServerState) -> Callable[[JobState], None]:
    """The jobs' ``on_complete``: start the webhook's delivery in a task of its own (kept in
    ``state.webhooks``), so that neither a cancel's answer nor the job waits on the receiver."""

    def on_complete(job: JobState) -> None:
        if not (job.request or {}).get("webhook_url"):
            return
        task = asyncio.ensure_future(notify(state, job))
        state.webhooks.add(task)
        task.add_done_callback(_delivered)

    def _delivered(task: asyncio.Task[None]) -> None:
        state.webhooks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a job's webhook failed", exc_info=task.exception())

    return on_complete


async def notify(state: ServerState, job: JobState) -> None:
    """POST the finished job to its webhook, if it has one (3 tries; failures are logged, never raised).
    Delivery is recorded in the job store; a restart delivers what a crash left undelivered."""
    url = (job.request or {}).get("webhook_url")
    if not url:
        return
    import httpx

    payload = json.dumps(_job_object(job, with_result=True), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Bastion-Timestamp": timestamp, "X-Bastion-Job": job.job_id}
    if state.config.webhook_secret:
        headers["X-Bastion-Signature"] = sign_webhook(state.config.webhook_secret, timestamp, payload)
    async with httpx.AsyncClient(timeout=state.config.webhook_timeout_s) as client:
        for attempt in range(3):
            try:
                response = await client.post(url, content=payload, headers=headers)
                if response.status_code < 500:  # delivered (a 4xx is the receiver's verdict, not a failure to retry)
                    if response.status_code >= 400:
                        log.warning("job %s: webhook %s answered %d", job.job_id, url, response.status_code)
                    if state.jobs is not None:
                        state.jobs.mark_notified(job.job_id)
                    return
            except httpx.HTTPError as e:
                log.warning("job %s: webhook %s failed: %s", job.job_id, url, e)
            await asyncio.sleep(0.5 * 2**attempt)
    log.error("job %s: webhook %s gave up after 3 tries", job.job_id, url)
