"""Tamper-evident audit trail: records, hash-chained JSONL / SQLite sinks, a Merkle tree with signed
tree heads and proofs, crypto-shredding of personal content, verification."""

from __future__ import annotations

from bastion.audit.config import AuditConfig, Encryption
from bastion.audit.heads import SignedTreeHead
from bastion.audit.keys import AuditKeyError, MasterKey, SigningKey, VerifyKey
from bastion.audit.log import AuditAck, AuditLog
from bastion.audit.record import (
    AuditRecord,
    BackendAttempt,
    ContentPolicy,
    GuardDecisionRecord,
    ModelIdentity,
    SealedContent,
    TextRecord,
)
from bastion.audit.sinks import AuditError
from bastion.audit.verify import VerifyResult, verify

__all__ = [
    "AuditAck", "AuditConfig", "AuditError", "AuditKeyError", "AuditLog", "AuditRecord", "BackendAttempt",
    "ContentPolicy", "Encryption", "GuardDecisionRecord", "MasterKey", "ModelIdentity", "SealedContent",
    "SignedTreeHead", "SigningKey", "TextRecord", "VerifyKey", "VerifyResult", "verify",
]
