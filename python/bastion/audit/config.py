"""How an audit trail is opened: ``Encryption`` (for ``AuditLog(encryption=)``) and ``AuditConfig``.

``AuditConfig`` is the flat form a service's settings map onto (one field per flag; keys named by a
file path or ``env:NAME``, never inline), and ``AuditConfig.open()`` builds the ``AuditLog``:

=======================  ==============================  ===========================================
field                    suggested flag / variable       meaning
=======================  ==============================  ===========================================
``path``                 ``--audit-path``                trail (.jsonl, .db, .sqlite)
``fsync``                ``--audit-fsync``               always | batch | never
``signing_key``          ``--audit-signing-key``         Ed25519 private key: PEM/raw file or env:NAME
``head_every``           ``--audit-head-every``          sign a tree head every N records (1000)
``head_interval_s``      ``--audit-head-interval``       ... or every T seconds (60)
``master_key``           ``--audit-master-key``          32-byte key (file or env:NAME): encrypt content
``keystore``             ``--audit-keystore``            subject key store (default PATH.keys)
``retention_days``       ``--audit-retention-days``      content older than this becomes unreadable
=======================  ==============================  ===========================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.audit.heads import SignedTreeHead
    from bastion.audit.keys import KeySource, MasterKey
    from bastion.audit.log import AuditLog


def describe_key_source(source: object) -> str:
    """How a key source may be shown: its file path or variable name; key bytes/objects as ``<key>``."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        return text if not isinstance(text, bytes) else "<key>"
    return "<key>"


@dataclass(frozen=True, repr=False)
class Encryption:
    """Crypto-shredding settings: seal personal content under per-subject, per-day keys.

    ``master_key``: a ``MasterKey``, 32 key bytes, or the source of one (file path or ``env:NAME``:
    32 raw bytes, 64 hex digits or base64). ``keystore``: the subject key store (default
    ``PATH.keys``). ``retention_days``: content of days older than this is made unreadable when the
    log opens and as days pass (None: kept until erased).
    """

    master_key: MasterKey | KeySource
    keystore: str | os.PathLike[str] | None = None
    retention_days: int | None = None

    def __post_init__(self) -> None:
        if self.retention_days is not None and self.retention_days < 0:
            raise ValueError(f"retention_days must be >= 0, got {self.retention_days}")

    def __repr__(self) -> str:
        return (f"Encryption(master_key={describe_key_source(self.master_key)!r}, keystore={self.keystore!r}, "
                f"retention_days={self.retention_days!r})")


class AuditConfig(BaseModel):
    """Every setting of an audit trail, flat, for a service's flags (see the module's table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="audit trail (.jsonl, .db or .sqlite)")
    fsync: Literal["always", "batch", "never"] = Field("always", description="when a record counts as durable")
    signing_key: str | None = Field(None, description="Ed25519 private key: PEM/raw file path or env:NAME; "
                                                      "None = unsigned (hash chain only)")
    head_every: int = Field(1000, ge=1, description="sign a tree head every N records")
    head_interval_s: float = Field(60.0, gt=0, description="... or every T seconds while records wait")
    master_key: str | None = Field(None, description="32-byte master key file path or env:NAME; "
                                                     "None = content not encrypted")
    keystore: str | None = Field(None, description="subject key store (default: PATH.keys)")
    retention_days: int | None = Field(None, ge=0, description="content older than this many days becomes "
                                                              "unreadable (needs master_key)")

    def encryption(self) -> Encryption | None:
        """The ``Encryption`` these settings ask for (None when no master key is set)."""
        if self.master_key is None:
            if self.retention_days is not None or self.keystore is not None:
                raise ValueError("retention_days / keystore: need master_key (content encryption)")
            return None
        return Encryption(self.master_key, self.keystore, self.retention_days)

    def open(self, witness: Callable[[SignedTreeHead], object] | None = None, **kwargs: Any) -> AuditLog:
        """Open the ``AuditLog`` (keys are loaded and checked now: a bad one raises ``AuditKeyError``)."""
        from bastion.audit.log import AuditLog

        return AuditLog(self.path, self.fsync, signing_key=self.signing_key, head_every=self.head_every,
                        head_interval_s=self.head_interval_s, witness=witness, encryption=self.encryption(),
                        **kwargs)
