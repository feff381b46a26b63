"""``ServerState``: what every route of one service shares (the Gateway, the local engine, the keys,
the jobs) and the service's life: loading, ready, draining, stopped."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.server.auth import KeyRing
from bastion.server.config import ServerConfig
from bastion.server.errors import APIError

if TYPE_CHECKING:
    from bastion.engine.async_llm import AsyncLLM
    from bastion.engine.jobs import JobManager
    from bastion.gateway.gateway import Gateway
    from bastion.model.tokenizer import Tokenizer
    from bastion.pipeline import PipelineRegistry


@dataclass(frozen=True)
class ServedModel:
    """One model clients can name. ``engine``: the local engine that runs it (None when every backend
    is remote: no tokenizer here). ``backends``: the Gateway backends a request for it may use (None:
    the Gateway's whole route, fallbacks included; the default model has it)."""

    id: str
    engine: AsyncLLM | None
    backends: tuple[str, ...] | None = None

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The engine's tokenizer (None when the model is remote)."""
        return self.engine.tokenizer if self.engine is not None else None

    @property
    def max_model_len(self) -> int | None:
        """The engine's context length (None when the model is remote)."""
        return self.engine.max_model_len if self.engine is not None else None


@dataclass
class ServerState:
    """The service's shared objects. ``gateway`` is None until the model has loaded."""

    config: ServerConfig
    keys: KeyRing
    registry: Any  # the prometheus CollectorRegistry of /metrics (None without prometheus-client)
    gateway: Gateway | None = None
    engine: AsyncLLM | None = None  # the local engine behind the Gateway, when there is one
    jobs: JobManager | None = None
    pipelines: PipelineRegistry | None = None  # the named pipelines of POST /v1/pipelines/{name}/runs
    model_name: str = "bastion"
    # every model clients can name, the default (``model_name``) first
    models: dict[str, ServedModel] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))
    load_error: BaseException | None = None
    draining: bool = False
    # request tasks in flight on the work routes: drained on SIGTERM, cancelled when the drain times out
    inflight: set[asyncio.Task] = field(default_factory=set)
    # job-completion webhooks being delivered (each in its own task: nothing waits on a receiver)
    webhooks: set[asyncio.Task] = field(default_factory=set)

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The local engine's tokenizer (None when every backend is remote)."""
        return self.engine.tokenizer if self.engine is not None else None

    @property
    def max_model_len(self) -> int | None:
        """The local engine's context length."""
        return self.engine.max_model_len if self.engine is not None else None

    def not_ready_reason(self) -> str | None:
        """Why the service cannot take work now, or None when it can."""
        if self.load_error is not None:
            return f"the model failed to load: {type(self.load_error).__name__}"
        if self.gateway is None:
            return "the model is loading"
        if self.draining:
            return "the server is draining"
        if self.engine is not None and self.engine.is_dead:
            return "the engine is not running"
        return None

    def serving_gateway(self) -> Gateway:
        """The Gateway, or a 503 saying why the service cannot take work now."""
        reason = self.not_ready_reason()
        if reason is not None or self.gateway is None:
            raise APIError(503, reason or "the model is loading", code="not_ready", retry_after=5)
        return self.gateway

    def check_model(self, requested: str | None) -> ServedModel:
        """The model a request names (the default one when it names none); 404 when this service does
        not serve it."""
        default = ServedModel(self.model_name, self.engine)
        if requested is None:
            return next(iter(self.models.values()), default)
        served = self.models.get(requested, default if requested == self.model_name else None)
        if served is None:
            known = list(self.models) or [self.model_name]
            raise APIError(404, f"model: {requested!r} is not served here; GET /v1/models lists {known}",
                           param="model", code="model_not_found")
        return served
