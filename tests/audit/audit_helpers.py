"""Builders shared by the audit tests."""

from __future__ import annotations

from pathlib import Path

from bastion.audit import AuditLog, AuditRecord, ContentPolicy


def make_record(i: int, outcome: str = "served") -> AuditRecord:
    """A realistic record whose content differs with ``i``."""
    policy = ContentPolicy()
    return AuditRecord(
        request_id=f"req-{i}",
        user=f"user-{i % 3}",
        tenant="acme",
        outcome=outcome,
        prompt=policy.capture(f"prompt number {i}"),
        output=policy.capture(f"answer number {i}"),
        prompt_tokens=3 + i,
        output_tokens=2 * i,
        total_time_s=0.01 * i,
    )


def write_trail(path: Path, n: int, fsync: str = "never") -> list:
    """Write ``n`` records to ``path`` and return their acks."""
    with AuditLog(path, fsync=fsync) as log:
        futures = [log.append(make_record(i)) for i in range(n)]
        return [f.result(5) for f in futures]
