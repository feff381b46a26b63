"""``build_app``: the FastAPI service over a Gateway, shared by ``bastion serve``, tests and other hosts.

The app owns the HTTP face only: each route checks its body and key, then calls the Gateway, so rate
limits, guardrails, breakers, fallback and one audit record apply to HTTP traffic exactly as to
in-process calls. One ASGI middleware gives every request its id (``X-Request-Id``, accepted or
made, echoed, and carried into the audit record), enforces the body limit, refuses new work while
draining, counts in-flight work for the drain, and writes the access log and the HTTP metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Container
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.gateway.gateway import Gateway
from bastion.server.auth import KeyRing
from bastion.server.config import ServerConfig
from bastion.server.errors import error_body, install_error_handlers
from bastion.server.state import ServedModel, ServerState

if TYPE_CHECKING:
    from bastion.engine.async_llm import AsyncLLM

log = logging.getLogger("bastion.server")
access_log = logging.getLogger("bastion.server.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_WORK_PREFIXES = ("/v1/", "/tokenize", "/detokenize")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ServiceMiddleware:
    """Request id, body limit, drain gate, in-flight tracking, access log and HTTP metrics."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self._requests = self._latency = None
        if state.registry is not None:
            import prometheus_client as prom

            self._requests = prom.Counter("bastion:http_requests", "HTTP requests by route and status.",
                                          ["method", "route", "status"], registry=state.registry)
            self._latency = prom.Histogram("bastion:http_request_duration_seconds",
                                           "HTTP request latency (to the last byte sent).", ["method", "route"],
                                           buckets=_LATENCY_BUCKETS, registry=state.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        rid = given if given is not None and _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = 0
        id_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        path: str = scope["path"]
        work = path.startswith(_WORK_PREFIXES)
        task = asyncio.current_task()
        try:
            refusal = self._refusal(scope, work)
            if refusal is not None:
                await _send_error(send_with_id, *refusal)
                return
            if work and task is not None:
                self.state.inflight.add(task)
            await self.app(scope, self._limited(receive), send_with_id)
        except asyncio.CancelledError:
            if not (self.state.draining and status == 0):
                raise
            # the drain deadline cut this request short before its answer: a 503 in OpenAI's shape (retry
            # elsewhere), not the bare 500 the server would send for an unanswered request
            await _send_error(send_with_id, 503, "the server is shutting down: the request was aborted at the drain "
                                                 "deadline; retry on another replica")
        finally:
            if task is not None:
                self.state.inflight.discard(task)
            self._record(scope, rid, status, time.perf_counter() - started)

    def _refusal(self, scope: Scope, work: bool) -> tuple[int, str] | None:
        if work and self.state.draining:
            return 503, "the server is draining; retry on another replica"
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.state.config.max_body_bytes:
            return 413, f"body: {length} bytes is larger than the limit of {self.state.config.max_body_bytes}"
        return None

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that stops a body (chunked or lying about its length) at the limit: the HTTPException
        passes through FastAPI's body parsing and is answered 413 in OpenAI's shape."""
        limit, seen = self.state.config.max_body_bytes, 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"body: larger than the limit of {limit} bytes")
            return message

        return limited

    def _record(self, scope: Scope, rid: str, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope.get("method", "")
        if self._requests is not None and self._latency is not None:
            self._requests.labels(method, route, str(status)).inc()
            self._latency.labels(method, route).observe(seconds)
        if self.state.config.access_log:
            principal = scope.get("state", {}).get("principal")
            client = scope.get("client")
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "request_id": rid, "method": method, "path": scope["path"],
                "route": route, "status": status, "duration_ms": round(seconds * 1000, 2),
                "client": client[0] if client else None, "tenant": getattr(principal, "tenant", None),
                "key_id": getattr(principal, "key_id", None)}, separators=(",", ":")))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps(error_body(status, message, code="draining" if status == 503 else None)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def local_engine(gateway: Gateway, skip: Container[str] = ()) -> AsyncLLM | None:
    """The AsyncLLM behind the Gateway's first local backend not named in ``skip`` (its tokenizer counts
    and renders prompts)."""
    from bastion.gateway.backend import LocalBackend

    for name, backend in gateway.backends.items():
        if isinstance(backend, LocalBackend) and name not in skip:
            return backend.engine
    return None


def served_models(config: ServerConfig, gateway: Gateway) -> dict[str, ServedModel]:
    """The models clients can name: the default one (the first local backend's, or "bastion" when every
    backend is remote) over the Gateway's route, then each of ``config.models`` on its own backend (the
    builder keys each extra engine by its name). ``ValueError`` when an extra has no local backend or
    takes the default's id."""
    from bastion.gateway.backend import LocalBackend

    extras = config.extra_models()
    engine = local_engine(gateway, skip=extras)
    default_id = config.served_model_name or (model_id(engine) if engine is not None else "bastion")
    route = tuple(name for name in gateway.backends if name not in extras) if extras else None
    models = {default_id: ServedModel(default_id, engine, route)}
    for name in extras:
        backend = gateway.backends.get(name)
        if not isinstance(backend, LocalBackend):
            raise ValueError(f"models: {name!r} has no local engine among the Gateway's backends {list(gateway.backends)}")
        if name in models:
            raise ValueError(f"models: {name!r} is the default model's id; name the extra model otherwise")
        models[name] = ServedModel(name, backend.engine, (name,))
    return models


def model_id(engine: AsyncLLM) -> str:
    """The id clients name the engine's model by: its file's stem (``SmolLM2-135M-Instruct.Q4_1``) or
    its directory's name, as vLLM names a model by the path it was given."""
    from pathlib import Path

    from bastion.model.loader import default_model_path

    path = Path(engine.config.model) if engine.config.model else default_model_path()
    return path.stem if path.is_file() else path.name


def build_app(gateway: Gateway | Callable[[], Gateway], *, config: ServerConfig | None = None,
              keys: KeyRing | None = None, registry: Any = None) -> FastAPI:
    """The service over ``gateway``.

    ``gateway``: a Gateway (the caller owns it and closes it), or a function building one, called on a
    worker thread at startup while ``/health`` already answers and ``/ready`` says 503 (the app owns
    what it builds: it closes the Gateway and its local engines at shutdown). ``keys``: the API keys
    (default: from ``config``); none configured means no authentication, which ``config.check_bind``
    allows on loopback only. ``registry``: the prometheus registry ``/metrics`` exposes (the engine
    and the Gateway should record into the same one).
    """
    config = config or ServerConfig()
    keys = keys if keys is not None else KeyRing.from_sources(config.api_keys, config.api_keys_file)
    config.check_bind(has_keys=len(keys) > 0)
    if registry is None:
        try:
            import prometheus_client

            registry = prometheus_client.CollectorRegistry()
        except ImportError:
            registry = None
    state = ServerState(config=config, keys=keys, registry=registry)
    owns = not isinstance(gateway, Gateway)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.ensure_future(_start(state, gateway))
        try:
            yield
        finally:
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await _stop(state, owns)

    app = FastAPI(title="bastion", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible inference over bastion's Gateway: completions, chat, jobs.")
    app.state.bastion = state
    install_error_handlers(app)
    from bastion.server import jobs_routes, openai_routes, ops_routes, pipelines_routes

    for module in (openai_routes, jobs_routes, pipelines_routes, ops_routes):
        app.include_router(module.router)
    app.add_middleware(ServiceMiddleware, state=state)
    return app


def _version() -> str:
    from bastion import __version__

    return __version__


async def _start(state: ServerState, gateway: Gateway | Callable[[], Gateway]) -> None:
    """Load (when given a builder), then open the job store and resume the jobs a crash interrupted."""
    from bastion.engine.jobs import JobManager
    from bastion.server.jobs_routes import completion_hook, job_runner

    try:
        ready = gateway if isinstance(gateway, Gateway) else await asyncio.to_thread(gateway)
        state.models = served_models(state.config, ready)
        default = next(iter(state.models.values()))
        state.engine, state.model_name = default.engine, default.id
        state.jobs = JobManager(state.config.job_store, resume=lambda job: job_runner(state, job))
        state.pipelines = _pipelines(state.config, ready)
        state.gateway = ready
        hook = completion_hook(state)
        resumed = await state.jobs.resume_pending(on_complete=hook)
        for job in state.jobs.unnotified():  # ended before a crash, webhook never delivered
            hook(job)
        log.info("serving %s%s", state.model_name, f"; resumed {len(resumed)} job(s)" if resumed else "")
    except asyncio.CancelledError:
        raise
    except BaseException as e:
        state.load_error = e
        log.exception("the service could not start")


def _pipelines(config: ServerConfig, gateway: Gateway) -> Any:
    """The registry of the YAML pipelines ``config.pipelines`` names, run over ``gateway`` (None without any)."""
    if not config.pipelines:
        return None
    from bastion.pipeline import Pipeline, PipelineRegistry

    files = [f.strip() for f in config.pipelines.split(",") if f.strip()]
    return PipelineRegistry(gateway, pipelines={p.name: p for p in (Pipeline.from_yaml(f) for f in files)})


async def drain(state: ServerState, timeout_s: float) -> int:
    """Stop taking work (503, readiness 503), let in-flight requests finish within ``timeout_s``, then
    cancel the rest (their engine requests abort, their audit records say so). Returns how many were cancelled."""
    state.draining = True
    deadline = time.monotonic() + timeout_s
    while state.inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    left = [t for t in state.inflight if not t.done()]
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left, timeout=5.0)
    return len(left)


async def _stop(state: ServerState, owns: bool) -> None:
    """Close the jobs (unfinished ones stay resumable), give webhooks in flight up to ``webhook_timeout_s``,
    flush the audit trail, close what the app built."""
    if state.jobs is not None:
        await state.jobs.aclose()
    if state.webhooks:
        _, late = await asyncio.wait(set(state.webhooks), timeout=state.config.webhook_timeout_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("%d job webhook(s) still undelivered at shutdown", len(late))
    if state.gateway is not None and owns:
        await state.gateway.aclose()
        if state.gateway.audit is not None:
            state.gateway.audit.close()
        for backend in state.gateway.backends.values():
            engine = getattr(backend, "engine", None)
            if engine is not None:
                await engine.close()
