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

    def check_model(self, requested: str | None) -> None:
        """404 when a request names a model this service does not serve."""
        if requested is not None and requested != self.model_name:
            raise APIError(404, f"model: {requested!r} is not served here; GET /v1/models lists {self.model_name!r}",
                           param="model", code="model_not_found")
