"""Fixtures for the gateway tests: a real audit log and a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from bastion.audit import AuditLog

from .gateway_helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def audit_log(audit_path: Path):
    log = AuditLog(audit_path, fsync="always")
    yield log
    log.close()
