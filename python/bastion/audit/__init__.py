"""Tamper-evident audit trail: records, hash-chained JSONL / SQLite sinks, verification."""

from __future__ import annotations

from bastion.audit.log import AuditAck, AuditLog
from bastion.audit.record import (
    AuditRecord,
    BackendAttempt,
    ContentPolicy,
    GuardDecisionRecord,
    ModelIdentity,
    TextRecord,
)
from bastion.audit.sinks import AuditError
from bastion.audit.verify import VerifyResult, verify

__all__ = [
    "AuditAck", "AuditError", "AuditLog", "AuditRecord", "BackendAttempt", "ContentPolicy",
    "GuardDecisionRecord", "ModelIdentity", "TextRecord", "VerifyResult", "verify",
]
