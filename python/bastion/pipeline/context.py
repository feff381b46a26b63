"""``RunContext``: what the steps of one run share: the Gateway, the run's id, budget, cache and tracing.

Every model call goes through ``RunContext.generate``: ``Gateway.stream`` pinned to one backend, with the
run's id, the pipeline and the step in the request's ``metadata`` (so the call's audit record names its
run) and a request id ``{run_id}.{step}.{n}``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.pipeline.budget import BudgetMeter
from bastion.pipeline.cache import ResultCache
from bastion.pipeline.prefix import PrefixSharing
from bastion.pipeline.result import PipelineError

if TYPE_CHECKING:
    from bastion.gateway import Gateway
    from bastion.gateway.types import Message
    from bastion.sampling.logprobs import TokenLogprobs
    from bastion.sampling.params import SamplingParams


@dataclass
class ModelReply:
    """One model call's answer."""

    text: str
    prompt_tokens: int
    output_tokens: int
    backend: str | None
    audit_id: str | None
    finish_reason: str | None
    logprobs: list[TokenLogprobs] | None = None


@dataclass
class RunContext:
    """State shared by the steps of one run."""

    gateway: Gateway | None
    pipeline: str
    run_id: str
    meter: BudgetMeter
    cache: ResultCache | None = None
    user: str | None = None
    tenant: str | None = None
    prefix: PrefixSharing = field(default_factory=PrefixSharing)
    model_calls: int = 0
    _ids: itertools.count = field(default_factory=itertools.count)

    def require_gateway(self) -> Gateway:
        """The run's Gateway; PipelineError when the run has none (a pipeline with model steps needs one)."""
        if self.gateway is None:
            raise PipelineError(f"pipeline {self.pipeline!r} has model steps: run it with a gateway")
        return self.gateway

    def backend_name(self, backend: str | None) -> str:
        """``backend``, or the Gateway's first backend; PipelineError naming an unknown one."""
        gateway = self.require_gateway()
        if backend is None:
            return next(iter(gateway.backends))
        if backend not in gateway.backends:
            raise PipelineError(f"backend {backend!r} is not one of the gateway's: {list(gateway.backends)}")
        return backend

    def model_identity(self, backend: str | None) -> dict[str, Any]:
        """Name and weights hash of the model behind ``backend`` (a cache key changes with the model)."""
        info = self.require_gateway().backends[self.backend_name(backend)].model_info
        return {"name": info.name, "version": info.version, "weights_sha256": info.weights_sha256}

    def engine(self, backend: str | None) -> Any:
        """The AsyncLLM behind a local ``backend``, or None for a remote one."""
        return getattr(self.require_gateway().backends[self.backend_name(backend)], "engine", None)

    def _prompt_ids(self, backend: str, prompt: str | list[Message]) -> list[int] | None:
        engine = self.engine(backend)
        if engine is None:
            return None
        try:
            return list(engine.processor.prompt_token_ids(prompt))
        except (TypeError, ValueError):  # the call itself reports it
            return None

    async def generate(self, step: str, prompt: str | list[Message], params: SamplingParams,
                       backend: str | None) -> ModelReply:
        """One model call through the Gateway on ``backend`` only; its tokens count against the budget."""
        gateway = self.require_gateway()
        name = self.backend_name(backend)
        ids = self._prompt_ids(name, prompt)
        leader = await self.prefix.enter(name, ids) if ids is not None else None
        self.model_calls += 1
        parts: list[str] = []
        logprobs: list[TokenLogprobs] | None = None
        reply = ModelReply("", 0, 0, None, None, None)
        metadata = {"pipeline": self.pipeline, "pipeline_run_id": self.run_id, "pipeline_step": step}
        try:
            async for delta in gateway.stream(prompt, params, user=self.user, tenant=self.tenant, metadata=metadata,
                                              request_id=f"{self.run_id}.{step}.{next(self._ids)}",
                                              backends=[name]):
                self.prefix.done(leader)
                parts.append(delta.text)
                if delta.logprobs is not None:
                    logprobs = (logprobs or []) + list(delta.logprobs)
                if delta.finished:
                    reply = ModelReply("", delta.prompt_tokens, delta.output_tokens, delta.backend, delta.audit_id,
                                       delta.finish_reason)
                    if delta.refusal is not None:
                        parts = [gateway.refusal_message]
        finally:
            self.prefix.done(leader)
            self.meter.add(reply.prompt_tokens, reply.output_tokens)
        reply.text = "".join(parts)
        reply.logprobs = logprobs
        return reply
