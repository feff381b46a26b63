"""The ``Backend`` protocol the Gateway routes over, and ``LocalBackend`` for an in-process AsyncLLM.

A backend is anything that can stream an answer:

* ``stream(request)`` - an async iterator of ``BackendChunk``; raising a ``BackendError`` (or
  ``bastion.Overloaded``) says why it could not go on. Closing the iterator early must stop
  the generation; ``abort(request_id)`` does the same from outside.
* ``model_info`` - a ``ModelIdentity`` (name, version, weights hash) for the audit trail.
* ``max_context`` - context window in tokens, or None when unknown (then no pre-call check).
* ``health()`` - a ``BackendHealth`` or None; local engines report KV usage, queue time and the
  preemption rate so the breaker can shed load *before* requests fail.
* ``count_tokens(text)`` - optional exact token count (the Gateway estimates when absent).
* ``continuation`` in the request: generate what follows prompt + that text (mid-stream failover).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from bastion.audit.record import ModelIdentity
from bastion.errors import PromptTooLong
from bastion.gateway.errors import (
    BackendTimeout,
    BackendUnavailable,
    ContextWindowExceeded,
    UpstreamServerError,
)
from bastion.gateway.types import BackendChunk, BackendHealth, BackendRequest

if TYPE_CHECKING:  # the engine pulls in torch; a Gateway over remote backends never needs it
    from bastion.engine.async_llm import AsyncLLM
    from bastion.engine.outputs import RequestOutput
    from bastion.sampling.logprobs import TokenLogprobs


@runtime_checkable
class Backend(Protocol):
    """What the Gateway needs from a model server, local or remote."""

    max_context: int | None

    @property
    def model_info(self) -> ModelIdentity:
        """Which model answers (an attribute or a read-only property)."""
        ...

    def stream(self, request: BackendRequest) -> AsyncIterator[BackendChunk]:
        """Stream the answer to ``request`` as chunks; the last one has ``finish_reason`` set."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop generating ``request_id`` now and free what it holds (idempotent)."""
        ...

    def health(self) -> BackendHealth | None:
        """Current engine-health signals, or None when the backend has none."""
        ...


if TYPE_CHECKING:
    # what the Gateway accepts as one backend, and as its ``backends`` argument
    BackendLike = Backend | AsyncLLM
    Backends = BackendLike | Sequence[BackendLike] | Mapping[str, BackendLike]


def count_tokens(backend: Backend, text: str) -> int:
    """Exact count through ``backend.count_tokens`` when it has one, else ~4 characters per token."""
    counter = getattr(backend, "count_tokens", None)
    if counter is not None:
        return int(counter(text))
    return (len(text) + 3) // 4


class LocalBackend:
    """Adapts a ``bastion.AsyncLLM`` to the ``Backend`` protocol (the Gateway wraps one for you)."""

    def __init__(self, engine: AsyncLLM, *, health_interval_s: float = 0.5) -> None:
        self.engine = engine
        self._model_info: ModelIdentity | None = None
        self.max_context: int | None = engine.max_model_len
        self._health_interval_s = health_interval_s
        self._health: BackendHealth | None = None
        self._health_at = -float("inf")
        self._last_preemptions: tuple[float, int] | None = None
        self._queue_time_ewma = 0.0

    @property
    def model_info(self) -> ModelIdentity:
        """Name, weights hash and numerics: a local model has no release version, these identify it. The
        hash is computed in the background at load; the first audit record waits for it if needed."""
        if self._model_info is None:
            self._model_info = ModelIdentity(name=self.engine.model_config.name or "local",
                                             weights_sha256=self.engine.weights_sha256() or None,
                                             numerics=self.engine.numerics)
        return self._model_info

    def count_tokens(self, text: str) -> int:
        """Exact prompt length with the engine's own tokenizer."""
        return len(self.engine.tokenizer.encode(text))

    async def stream(self, request: BackendRequest) -> AsyncIterator[BackendChunk]:
        """Run the request on the engine with delta outputs; closing the iterator aborts it."""
        try:
            engine_request = self.engine.processor.process_inputs(
                request.request_id, request.messages if request.messages is not None else request.prompt or "",
                request.params, priority=request.priority, cache_salt=request.tenant, output_kind="delta",
                continuation=request.continuation)
        except PromptTooLong as e:  # a backend with a larger window may still serve it
            raise ContextWindowExceeded(str(e)) from e
        generator = self.engine.generate(engine_request)
        finished = False
        try:
            async for out in generator:
                finished = out.finished
                yield self._to_chunk(out)
        finally:
            if not finished:  # closed early (failover, guardrail block, client gone): free the KV blocks
                await generator.aclose()
                await self.abort(request.request_id)

    def _to_chunk(self, out: RequestOutput) -> BackendChunk:
        # the engine's delta logprobs are one TokenLogprobs per new token (None unless params.logprobs)
        logprobs = tuple(cast("list[TokenLogprobs]", out.logprobs)) if out.logprobs is not None else None
        if not out.finished:
            return BackendChunk(out.text, tuple(out.token_ids), len(out.token_ids), logprobs=logprobs)
        m = out.metrics
        # The engine ended the request on its own: a failure the Gateway can fall back from.
        if out.finish_reason == "error":
            raise UpstreamServerError(f"engine error: {m.error or 'unknown'}")
        if out.finish_reason == "timeout":
            raise BackendTimeout(f"engine {m.timeout_reason or ''} deadline exceeded".replace("  ", " "))
        if out.finish_reason == "abort":
            raise BackendUnavailable("the engine aborted the request")
        queue_time = m.queue_time or 0.0
        self._queue_time_ewma = 0.8 * self._queue_time_ewma + 0.2 * queue_time
        return BackendChunk(
            out.text, tuple(out.token_ids), len(out.token_ids), finish_reason=out.finish_reason,
            prompt_tokens=len(out.prompt_token_ids),
            metrics={"queue_time_s": queue_time, "preemptions": float(m.num_preemptions)}, logprobs=logprobs,
        )

    async def abort(self, request_id: str) -> None:
        """Abort the engine request (frees its KV blocks at once)."""
        await self.engine.abort(request_id)

    def health(self) -> BackendHealth | None:
        """KV usage, recent queue time and preemptions/s from ``engine.stats()`` (refreshed at most
        every ``health_interval_s``, so routing does not poll the engine per request)."""
        now = time.monotonic()
        if now - self._health_at < self._health_interval_s:
            return self._health
        stats = self.engine.stats()
        preemptions = int(stats.get("num_preemptions", 0))
        rate = 0.0
        if self._last_preemptions is not None:
            then, before = self._last_preemptions
            rate = max(0, preemptions - before) / max(now - then, 1e-9)
        self._last_preemptions = (now, preemptions)
        self._health = BackendHealth(float(stats.get("kv_cache_usage", 0.0)), self._queue_time_ewma, rate)
        self._health_at = now
        return self._health


def as_backend(obj: object, where: str) -> Backend:
    """``obj`` itself when it is a Backend; an AsyncLLM wrapped in ``LocalBackend``; else TypeError."""
    if isinstance(obj, Backend):
        return obj
    # an AsyncLLM, recognised without importing the engine (and torch) into a Gateway of remote backends
    if hasattr(obj, "generate") and hasattr(obj, "abort") and hasattr(obj, "model_config"):
        return LocalBackend(obj)  # type: ignore[arg-type]  # an AsyncLLM by the duck test above
    raise TypeError(f"backend {where} is neither a Backend nor an AsyncLLM: {type(obj).__name__}")


def named_backends(backends: Backends) -> dict[str, Backend]:
    """Name the backends: dict keys, or positions "0", "1", ... for a list (or a single backend)."""
    if isinstance(backends, Mapping):
        return {str(k): as_backend(v, repr(k)) for k, v in backends.items()}
    if isinstance(backends, Sequence) and not isinstance(backends, str):
        return {str(i): as_backend(b, str(i)) for i, b in enumerate(backends)}
    return {"0": as_backend(backends, "0")}
