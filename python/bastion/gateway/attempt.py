"""One attempt on one backend: stream its chunks through the output gate under phase timeouts.

Timeouts are per phase (the gap LiteLLM users keep hitting): ``first_token_s`` until the first
chunk, ``stall_s`` between chunks, ``attempt_s`` for the whole attempt. They wrap only the wait for
the backend's next chunk, never the caller's handling of a released chunk. However the attempt
ends early (error, timeout, guardrail block, client gone), the backend's stream is closed and
``abort`` is called, so a local engine frees the request's KV blocks at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.gateway.backend import Backend
from bastion.gateway.errors import BackendTimeout, MalformedResponse
from bastion.gateway.guarding import OutputGate, join_logprobs
from bastion.gateway.types import BackendChunk, BackendRequest

if TYPE_CHECKING:
    from bastion.sampling.logprobs import TokenLogprobs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timeouts:
    """Phase timeouts in seconds (None = unbounded)."""

    first_token_s: float | None = None
    stall_s: float | None = None
    attempt_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("first_token_s", "stall_s", "attempt_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"timeouts.{name} must be > 0 seconds or None, got {value!r}")


@dataclass(frozen=True)
class Released:
    """What an attempt lets through to the client at one step; ``final`` is the backend's last chunk.

    ``logprobs`` is aligned one-to-one with ``token_ids``, or None when the backend gave none.
    """

    text: str
    token_ids: tuple[int, ...]
    num_tokens: int
    final: BackendChunk | None = None
    logprobs: tuple[TokenLogprobs, ...] | None = None


def _next_deadline(loop_now: float, attempt_deadline: float | None, phase_timeout: float | None,
                   phase: str) -> tuple[float | None, str]:
    if phase_timeout is None or (attempt_deadline is not None and attempt_deadline <= loop_now + phase_timeout):
        return attempt_deadline, "attempt"
    return loop_now + phase_timeout, phase


async def run_attempt(backend: Backend, request: BackendRequest, gate: OutputGate,
                      timeouts: Timeouts) -> AsyncGenerator[Released, None]:
    """Yield what the gate releases from ``backend.stream(request)``; the last item has ``final``.

    Raises ``BackendTimeout`` (naming the phase), ``MalformedResponse`` when the stream ends with no
    finish reason, ``GuardrailViolation`` from the gate, or whatever the backend raised.
    """
    loop = asyncio.get_running_loop()
    attempt_deadline = loop.time() + timeouts.attempt_s if timeouts.attempt_s is not None else None
    chunks = backend.stream(request).__aiter__()
    started_output = finished = False
    try:
        while True:
            phase_timeout = timeouts.stall_s if started_output else timeouts.first_token_s
            deadline, phase = _next_deadline(loop.time(), attempt_deadline, phase_timeout,
                                             "stall" if started_output else "first_token")
            try:
                if deadline is None:
                    chunk = await anext(chunks)
                else:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks)
            except StopAsyncIteration:
                raise MalformedResponse("backend stream ended without a finish reason") from None
            except TimeoutError as e:
                raise BackendTimeout(f"{phase} timeout: no chunk from the backend in time") from e
            started_output = started_output or bool(chunk.text or chunk.token_ids)
            text, ids, n, logprobs = gate.push(chunk.text, chunk.token_ids, chunk.num_tokens, chunk.logprobs)
            if chunk.finish_reason is not None:
                rest = gate.finish()
                finished = True
                yield Released(text + rest.text, ids + rest.token_ids, n + rest.num_tokens, chunk,
                               join_logprobs(logprobs, rest.logprobs))
                return
            if text or ids or n:
                yield Released(text, ids, n, logprobs=logprobs)
    finally:
        if not finished:
            await _stop(backend, chunks, request.request_id)


async def _stop(backend: Backend, chunks: AsyncIterator[BackendChunk], request_id: str) -> None:
    """Close the stream and abort the request; a failure here must not hide the original error."""
    try:
        await chunks.aclose()  # type: ignore[attr-defined]  # Backend.stream is an async generator in practice
        await backend.abort(request_id)
    except Exception:
        log.exception("aborting %s on its backend failed", request_id)
