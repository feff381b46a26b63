"""Signed tree heads and the checkpoint log that keeps them next to the trail (``PATH.heads``).

A signed tree head (STH) commits to the whole trail up to ``tree_size`` records: the Ed25519
signature covers a fixed binary message (like RFC 6962's ``TreeHeadSignature``)::

    b"bastion-audit-sth-v1\\0" || uint64 tree_size || uint64 timestamp_ms || root_hash (32) || key_id (32)

The heads log is JSONL, one head per line, in signing order. Beside the signed fields each line
carries two unsigned helpers that the signature nevertheless pins down: ``leaves``, the leaf
hashes of the records the head added since the previous head (together with the earlier heads'
leaves they must reproduce the signed root, so once checked they name exactly which record was
changed), and ``frontier``, the tree's compact range at ``tree_size`` (lets a writer resume
without rereading the trail). An external witness gets the signed fields only (``SignedTreeHead``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.audit.chain import canonical_json
from bastion.audit.keys import SigningKey, VerifyKey
from bastion.audit.merkle import CompactRange
from bastion.audit.sinks import AuditError

log = logging.getLogger(__name__)
STH_DOMAIN = b"bastion-audit-sth-v1\x00"


def heads_path_for(trail: str | os.PathLike[str]) -> Path:
    """Where the heads log of the trail at ``trail`` lives: the same path plus ``.heads``."""
    return Path(os.fspath(trail) + ".heads")


@dataclass(frozen=True)
class SignedTreeHead:
    """A signed commitment to the first ``tree_size`` records (``root_hash`` of their Merkle tree)."""

    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: str
    signature: bytes = b""

    def message(self) -> bytes:
        """The exact bytes the signature covers."""
        return (STH_DOMAIN + struct.pack(">QQ", self.tree_size, self.timestamp_ms) + self.root_hash
                + bytes.fromhex(self.key_id))

    @classmethod
    def sign(cls, key: SigningKey, tree_size: int, root_hash: bytes, timestamp_ms: int) -> SignedTreeHead:
        """A head over (tree_size, root_hash, timestamp_ms) signed by ``key``."""
        head = cls(tree_size, root_hash, timestamp_ms, key.key_id)
        return cls(tree_size, root_hash, timestamp_ms, key.key_id, key.sign(head.message()))

    def verify(self, key: VerifyKey) -> str | None:
        """Why this head does not verify with ``key``, or None when its signature is good."""
        if self.key_id != key.key_id:
            return f"signed by key id {self.key_id[:16]}..., not by the given key ({key.key_id[:16]}...)"
        if not key.verify(self.signature, self.message()):
            return "signature does not verify (forged or altered head)"
        return None

    def __repr__(self) -> str:
        return (f"SignedTreeHead(tree_size={self.tree_size}, root_hash={self.root_hash.hex()[:16]}..., "
                f"time={self.time}, key_id={self.key_id[:16]}...)")

    @property
    def time(self) -> str:
        """The timestamp as UTC ISO 8601."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")

    def to_json(self) -> dict[str, Any]:
        """The signed fields as JSON values (hashes hex, signature base64)."""
        return {"tree_size": self.tree_size, "root_hash": self.root_hash.hex(), "timestamp": self.timestamp_ms,
                "time": self.time, "key_id": self.key_id, "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_json(cls, obj: Any) -> SignedTreeHead:
        """Parse ``to_json``'s form; ValueError naming what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError("a tree head is a JSON object")
        try:
            size, ts = obj["tree_size"], obj["timestamp"]
            if not (isinstance(size, int) and isinstance(ts, int)) or size < 0 or ts < 0:
                raise ValueError("tree_size and timestamp must be non-negative integers")
            root = bytes.fromhex(obj["root_hash"])
            key_id = str(obj["key_id"])
            if len(root) != 32 or len(bytes.fromhex(key_id)) != 32:
                raise ValueError("root_hash and key_id must be 64 hex digits")
            return cls(size, root, ts, key_id, base64.b64decode(obj["signature"], validate=True))
        except (KeyError, TypeError) as e:
            raise ValueError(f"tree head lacks or mistypes a field ({e})") from None
        except ValueError as e:
            raise ValueError(f"tree head field malformed ({e})") from None


@dataclass(frozen=True)
class HeadEntry:
    """One line of the heads log: the head, the leaf hashes it added, the frontier at its size."""

    head: SignedTreeHead
    leaves: list[bytes] = field(default_factory=list)
    frontier: list[bytes] = field(default_factory=list)

    def to_line(self) -> bytes:
        """The canonical JSON line."""
        obj = self.head.to_json() | {"leaves": [h.hex() for h in self.leaves],
                                     "frontier": [h.hex() for h in self.frontier]}
        return canonical_json(obj).encode() + b"\n"

    @classmethod
    def from_obj(cls, obj: Any) -> HeadEntry:
        """Parse one parsed JSON line; ValueError naming the problem."""
        head = SignedTreeHead.from_json(obj)
        try:
            leaves = [bytes.fromhex(h) for h in obj.get("leaves", [])]
            frontier = [bytes.fromhex(h) for h in obj.get("frontier", [])]
        except (TypeError, ValueError, AttributeError):
            raise ValueError("leaves / frontier are not lists of hex hashes") from None
        if any(len(h) != 32 for h in leaves + frontier):
            raise ValueError("leaves / frontier hashes must be 32 bytes")
        return cls(head, leaves, frontier)

    def compact_range(self) -> CompactRange:
        """The frontier as a ``CompactRange``; ValueError when it does not reproduce the signed root."""
        tree = CompactRange(self.head.tree_size, self.frontier)
        if tree.root() != self.head.root_hash:
            raise ValueError("its frontier does not reproduce its signed root")
        return tree


def read_heads(path: Path) -> Iterator[tuple[int, HeadEntry | str]]:
    """(line number, entry or the reason it cannot be read) for each line of the heads log."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, HeadEntry.from_obj(json.loads(raw))
            except ValueError as e:
                yield lineno, f"not a tree head ({e})"


class HeadLog:
    """The writer's handle on the heads log: exclusive ``flock``, appends fsynced one by one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a+b")  # noqa: SIM115 - kept open for the writer's lifetime
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise AuditError(f"heads log {path} is already open for writing by another AuditLog") from None
        self.last: HeadEntry | None = None
        try:
            self.last = self._recover_last()
        except BaseException:
            self._file.close()
            raise

    def _recover_last(self) -> HeadEntry | None:
        """The last complete head; a torn final line (a crash while writing it) is cut off."""
        size = self._file.seek(0, os.SEEK_END)
        self._file.seek(0)
        data = self._file.read(size)
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning("heads log %s: dropping a torn final line of %d bytes", self.path, len(data) - cut)
            self._file.truncate(cut)
            data = data[:cut]
        lines = data.rstrip(b"\n").rsplit(b"\n", 1)
        if not lines[-1]:
            return None
        try:
            return HeadEntry.from_obj(json.loads(lines[-1]))
        except ValueError as e:
            raise AuditError(f"heads log {self.path}: last line is not a tree head ({e})") from None

    def append(self, entry: HeadEntry) -> None:
        """Write and fsync one head."""
        self._file.write(entry.to_line())
        self._file.flush()
        os.fsync(self._file.fileno())
        self.last = entry

    def close(self) -> None:
        """Unlock and close the file."""
        self._file.close()
