"""Storage for the chained audit trail: a JSONL file or an append-only SQLite table.

A sink is used by exactly one writer thread (see ``AuditLog``). ``append`` links the records onto
the chain tail and hands them to the OS; ``sync`` makes everything appended so far durable.
Both sinks recover the chain tail when they reopen an existing trail.

With ``track_tree`` (``AuditLog`` turns it on for a signed trail) a sink also keeps the Merkle
tree over its records (``bastion.audit.merkle``): the compact range in ``tree`` and the leaf
hashes not yet covered by a signed tree head in ``leaves``; O(log n) per record, nothing recomputed.
A record's leaf data is exactly its stored canonical JSON.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

from bastion.audit.chain import ChainTail, canonical_json, link
from bastion.audit.merkle import CompactRange, leaf_hash
from bastion.errors import BastionError

log = logging.getLogger(__name__)
FsyncPolicy = Literal["always", "batch", "never"]


class AuditError(BastionError):
    """The audit trail cannot be opened or written (locked, corrupt tail, disk error, closed)."""


class AuditSink(Protocol):
    """What ``AuditLog``'s writer thread needs from a storage format."""

    tree: CompactRange | None
    leaves: list[bytes]

    def track_tree(self, start: CompactRange) -> None:
        """Keep the Merkle tree from ``start`` (a signed head's frontier) on; hash the records after it."""
        ...

    def append(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Link ``bodies`` onto the chain, write them, and return the linked records."""
        ...

    def sync(self) -> None:
        """Make every record appended so far durable (fsync or equivalent)."""
        ...

    def close(self) -> None:
        """Release the file handles."""
        ...


def read_suffix(file: Any, size: int) -> tuple[int, bytes]:
    """Read a suffix of ``file`` (``size`` bytes long) holding its last complete line (no full scan)."""
    chunk = 1 << 16
    while True:
        start = max(0, size - chunk)
        file.seek(start)
        data = file.read(size - start)
        if start == 0 or data.count(b"\n") >= 2:
            return start, data
        chunk *= 4


class _TreeMixin:
    """The Merkle bookkeeping both sinks share."""

    path: Path
    tree: CompactRange | None = None
    leaves: list[bytes]

    def _add_leaves(self, encoded: list[bytes]) -> None:
        if self.tree is not None:
            for data in encoded:
                h = leaf_hash(data)
                self.tree.append(h)
                self.leaves.append(h)

    def _start_tree(self, start: CompactRange, next_seq: int, stored_from: Any) -> None:
        """Resume the tree at ``start``; ``stored_from(seq)`` yields the stored records after it."""
        if next_seq < start.size:
            raise AuditError(f"audit trail {self.path} holds {next_seq} records but a signed tree head covers "
                             f"{start.size}: records were cut off the end (run: python -m bastion audit verify)")
        self.tree, self.leaves = start.copy(), []
        if next_seq > start.size:
            self._add_leaves([canonical_json(json.loads(raw)).encode("utf-8", "surrogatepass")
                              for raw in stored_from(start.size)])


class JsonlSink(_TreeMixin):
    """One canonical-JSON record per line. Holds an exclusive ``flock`` so two writers cannot race."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a+b")  # noqa: SIM115 - kept open for the writer's lifetime
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise AuditError(f"audit trail {path} is already open for writing by another AuditLog") from None
        self.leaves = []
        self._tail = self._recover_tail()

    def track_tree(self, start: CompactRange) -> None:
        """Keep the Merkle tree on from ``start``; the records after it are read back and hashed."""
        self._start_tree(start, self._tail.next_seq, self._lines_from)

    def _lines_from(self, seq: int) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            for i, raw in enumerate(f):
                if i >= seq:
                    yield raw

    def _recover_tail(self) -> ChainTail:
        """Find the last complete record; cut a torn final line (never acknowledged, see AuditLog)."""
        size = self._file.seek(0, os.SEEK_END)
        start, data = read_suffix(self._file, size)
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning("audit trail %s: dropping a torn final line of %d bytes", self.path, len(data) - cut)
            self._file.truncate(start + cut)
            data = data[:cut]
        lines = data.rstrip(b"\n").rsplit(b"\n", 1)
        if not lines[-1]:
            return ChainTail()
        try:
            last = json.loads(lines[-1])
            return ChainTail(int(last["seq"]) + 1, str(last["hash"]))
        except (ValueError, KeyError, TypeError) as e:
            raise AuditError(f"audit trail {self.path}: last line is not a chained record ({e})") from e

    def append(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Link and write ``bodies`` as lines; flushed to the OS, not yet fsynced."""
        linked = []
        for body in bodies:
            entry = link(body, self._tail.next_seq, self._tail.last_hash)
            self._tail = self._tail.advance(entry)
            linked.append(entry)
        encoded = [canonical_json(e).encode("utf-8", "surrogatepass") for e in linked]
        self._file.write(b"".join(data + b"\n" for data in encoded))
        self._file.flush()
        self._add_leaves(encoded)
        return linked

    def sync(self) -> None:
        """fsync the file."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Unlock and close the file."""
        self._file.close()


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    seq INTEGER PRIMARY KEY,
    record_id TEXT NOT NULL,
    time TEXT NOT NULL,
    outcome TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only: UPDATE is forbidden'); END;
CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only: DELETE is forbidden'); END;
"""

# How hard SQLite syncs each commit, per fsync policy (WAL mode).
_SYNCHRONOUS = {"always": "FULL", "batch": "NORMAL", "never": "OFF"}


class SqliteSink(_TreeMixin):
    """Rows in an append-only table (triggers refuse UPDATE/DELETE), WAL journal.

    The tail is re-read inside each ``BEGIN IMMEDIATE`` transaction, so even two processes
    appending to the same database keep one consistent chain.
    """

    def __init__(self, path: Path, fsync: FsyncPolicy) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={_SYNCHRONOUS[fsync]}")
        self._db.executescript(_SQLITE_SCHEMA)
        self.leaves = []

    def track_tree(self, start: CompactRange) -> None:
        """Keep the Merkle tree on from ``start``; the rows after it are read back and hashed."""
        self._start_tree(start, self._tail().next_seq, self._bodies_from)

    def _bodies_from(self, seq: int) -> Iterator[str]:
        for (body,) in self._db.execute("SELECT body FROM audit_records WHERE seq >= ? ORDER BY seq", (seq,)):
            yield body

    def _tail(self) -> ChainTail:
        row = self._db.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
        return ChainTail() if row is None else ChainTail(row[0] + 1, row[1])

    def append(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Link and insert ``bodies`` in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            tail = self._tail()
            if self.tree is not None and tail.next_seq > self.tree.size:  # another process appended
                self._add_leaves([canonical_json(json.loads(b)).encode("utf-8", "surrogatepass")
                                  for b in self._bodies_from(self.tree.size)])
            linked = []
            for body in bodies:
                entry = link(body, tail.next_seq, tail.last_hash)
                tail = tail.advance(entry)
                linked.append(entry)
            texts = [canonical_json(e) for e in linked]
            self._db.executemany(
                "INSERT INTO audit_records (seq, record_id, time, outcome, prev_hash, hash, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e["seq"], e.get("record_id", ""), e.get("time", ""), e.get("outcome", ""),
                  e["prev_hash"], e["hash"], text) for e, text in zip(linked, texts, strict=True)],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._add_leaves([t.encode("utf-8", "surrogatepass") for t in texts])
        return linked

    def sync(self) -> None:
        """Checkpoint the WAL so commits made under ``synchronous=NORMAL`` reach the database file."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


def open_sink(path: str | os.PathLike[str], fsync: FsyncPolicy) -> AuditSink:
    """Pick the sink by suffix: ``.jsonl`` -> JSONL, ``.db`` / ``.sqlite`` -> SQLite."""
    p = Path(path)
    if p.suffix == ".jsonl":
        return JsonlSink(p)
    if p.suffix in (".db", ".sqlite", ".sqlite3"):
        return SqliteSink(p, fsync)
    raise ValueError(f"audit path {p}: unsupported suffix {p.suffix!r} (use .jsonl, .db or .sqlite)")
