"""One shared server for the API tests (loading the model once), on loopback with keys of two tenants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server_process import ServerProcess


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real ``bastion serve`` with API keys, a job store and an audit trail."""
    tmp = tmp_path_factory.mktemp("server")
    proc = ServerProcess(tmp, "--audit-path", str(tmp / "audit.jsonl"), "--max-num-seqs", "64",
                         "--webhook-secret", "hook-secret")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()
