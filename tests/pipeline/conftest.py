"""Fixtures of the pipeline tests: one real SmolLM2 engine for the module, a Gateway with an audit log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bastion.audit.record import ModelIdentity
from bastion.gateway.errors import BackendUnavailable
from bastion.gateway.types import BackendChunk, BackendRequest


@pytest.fixture(scope="module")
def engine(smollm2_path):
    """The embedded default model on one thread (the machine is shared)."""
    from bastion import AsyncLLM

    llm = AsyncLLM(str(smollm2_path), max_model_len=1024, num_threads=1)
    yield llm
    asyncio.run(llm.close())


class BrokenBackend:
    """A backend that always fails before its first chunk (counts its calls)."""

    max_context = None
    model_info = ModelIdentity(name="broken-model", version="1")

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: BackendRequest) -> AsyncIterator[BackendChunk]:
        """Fail at once."""
        self.calls += 1
        raise BackendUnavailable("broken on purpose")
        yield BackendChunk("")  # an async generator

    async def abort(self, request_id: str) -> None:
        """Nothing to stop."""

    def health(self) -> None:
        """No health signals."""


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
async def gateway(engine, audit_path):
    """A Gateway over the engine ("primary") and a broken backend, with a JSONL audit log."""
    import bastion

    gw = bastion.Gateway(backends={"primary": engine, "broken": BrokenBackend()}, audit=bastion.AuditLog(audit_path))
    yield gw
    await gw.aclose()


@pytest.fixture
def audit_log(tmp_path: Path):
    from bastion.audit import AuditLog

    log = AuditLog(tmp_path / "parts_audit.jsonl")
    yield log
    log.close()
