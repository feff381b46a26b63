"""Backends implementing the Gateway's ``Backend`` protocol with injectable faults.

``ScriptedBackend`` "generates" a fixed script word by word. It honours ``continuation`` the way a
real model continues a prefix: it emits the script *after* the continuation, so a failover test can
check that the client saw the script exactly once. Faults: raise before the first chunk, hang,
answer late (``first_delay_s``), stream slowly, fail after N chunks, emit a malformed (finish-less) stream, report bad health.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bastion.audit.record import ModelIdentity
from bastion.gateway.types import BackendChunk, BackendHealth, BackendRequest

SCRIPT = "The quick brown fox jumps over the lazy dog and then rests under a tall green tree ."


@dataclass
class ScriptedBackend:
    """A backend that streams ``script`` one word per chunk, with optional faults."""

    name: str = "scripted"
    script: str = SCRIPT
    raise_before: BaseException | None = None  # raised instead of the first chunk
    fail_after: int | None = None  # raise ``fail_exc`` after this many chunks
    fail_exc: BaseException | None = None
    hang: bool = False  # never produce a chunk
    delay_s: float = 0.0  # between chunks
    first_delay_s: float = 0.0  # before anything else (a slow first token)
    end_without_finish: bool = False  # malformed: stream stops with no finish_reason
    max_context: int | None = None
    health_report: BackendHealth | None = None
    token_base: int = 1000
    requests: list[BackendRequest] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    completed: int = 0
    cancelled: int = 0  # streams closed or cancelled from outside before they ended

    def __post_init__(self) -> None:
        self.model_info = ModelIdentity(name=f"{self.name}-model", version="1", weights_sha256="ab" * 32)

    def count_tokens(self, text: str) -> int:
        """One token per whitespace-separated word."""
        return len(text.split())

    def health(self) -> BackendHealth | None:
        """The configured health report."""
        return self.health_report

    async def abort(self, request_id: str) -> None:
        """Remember the abort (tests assert generation was stopped)."""
        self.aborted.append(request_id)

    def heal(self) -> None:
        """Remove every fault."""
        self.raise_before = self.fail_exc = self.fail_after = None
        self.hang = self.end_without_finish = False

    def _remaining_words(self, request: BackendRequest) -> list[str]:
        done = request.continuation
        rest = self.script[len(done):] if self.script.startswith(done) else self.script
        words = rest.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0]
        return [p for p in pieces if p][: request.params.max_tokens]

    async def stream(self, request: BackendRequest) -> AsyncIterator[BackendChunk]:
        """Stream the script after ``request.continuation``; inject the configured faults."""
        self.requests.append(request)
        final_sent = False
        try:
            if self.first_delay_s:
                await asyncio.sleep(self.first_delay_s)
            if self.hang:
                await asyncio.Event().wait()
            if self.raise_before is not None:
                raise self.raise_before
            pieces = self._remaining_words(request) or [""]  # nothing left: just the end of sequence
            for i, piece in enumerate(pieces):
                if self.fail_after is not None and i == self.fail_after:
                    raise self.fail_exc or RuntimeError("injected mid-stream failure")
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                last = i == len(pieces) - 1
                if last and self.end_without_finish:
                    yield BackendChunk(piece, (self.token_base + i,), 1)
                    return
                finish = ("length" if len(pieces) == request.params.max_tokens else "stop") if last else None
                final_sent = last
                yield BackendChunk(piece, (self.token_base + i,), 1, finish_reason=finish,
                                   prompt_tokens=self.count_tokens(request.prompt or "") if last else None)
        except (asyncio.CancelledError, GeneratorExit):
            if not final_sent:  # closing a finished stream is no cancellation
                self.cancelled += 1  # tests assert a hedge loser was stopped, not left running
            raise
        self.completed += 1
