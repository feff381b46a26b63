"""Reading a stored trail back, read-only: the entries in order, their leaf hashes, one record by seq.

Shared by ``verify``, ``audit prove`` and ``audit show``. A JSONL trail is read line by line; a
SQLite trail row by row in insertion (rowid) order, each row's mirrored columns checked against its
hashed body. An entry that cannot be parsed is yielded as ``Unreadable`` with the reason.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bastion.audit.chain import canonical_json
from bastion.audit.merkle import leaf_hash

# Columns of the SQLite table that duplicate body fields; they must agree with the hashed body.
SQLITE_MIRRORED = ("seq", "record_id", "time", "outcome", "prev_hash", "hash")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class Unreadable:
    """An entry that could not even be parsed; carries why."""

    def __init__(self, why: str) -> None:
        self.why = why


def _jsonl_entries(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"line {lineno}"
            if not raw.strip():
                yield where, Unreadable("blank line inside the trail")
                continue
            try:
                yield where, json.loads(raw)
            except ValueError as e:
                yield where, Unreadable(f"not valid JSON ({e})")


def _sqlite_entries(path: Path) -> Iterator[tuple[str, Any]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cols = ", ".join(SQLITE_MIRRORED)
        for row in db.execute(f"SELECT rowid, {cols}, body FROM audit_records ORDER BY rowid"):
            where = f"row {row[0]}"
            try:
                body = json.loads(row[-1])
            except ValueError as e:
                yield where, Unreadable(f"body is not valid JSON ({e})")
                continue
            columns = dict(zip(SQLITE_MIRRORED, row[1:-1], strict=True))
            bad = [c for c, v in columns.items() if isinstance(body, dict) and body.get(c) != v]
            yield where, Unreadable(f"column(s) {', '.join(bad)} differ from the hashed body") if bad else body
    finally:
        db.close()


def entries(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """(where, parsed entry or ``Unreadable``) for every stored entry, in storage order."""
    p = Path(path)
    if p.suffix == ".jsonl":
        return _jsonl_entries(p)
    if p.suffix in SQLITE_SUFFIXES:
        return _sqlite_entries(p)
    raise ValueError(f"audit path {p}: unsupported suffix {p.suffix!r} (use .jsonl, .db or .sqlite)")


def record_leaf(entry: dict[str, Any]) -> bytes:
    """The Merkle leaf hash of a stored record: SHA-256(0x00 || its canonical JSON)."""
    return leaf_hash(canonical_json(entry).encode("utf-8", "surrogatepass"))


def records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The parsed records in order; ValueError at the first entry that cannot be parsed."""
    for where, entry in entries(path):
        if isinstance(entry, Unreadable) or not isinstance(entry, dict):
            why = entry.why if isinstance(entry, Unreadable) else "not a JSON object"
            raise ValueError(f"audit trail {path}, {where}: {why} (run: python -m bastion audit verify)")
        yield entry


def find_record(path: str | os.PathLike[str], seq: int) -> dict[str, Any]:
    """The stored record at ``seq``; LookupError when the trail has none."""
    p = Path(path)
    if p.suffix in SQLITE_SUFFIXES:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT body FROM audit_records WHERE seq = ?", (seq,)).fetchone()
        finally:
            db.close()
        if row is not None:
            body: dict[str, Any] = json.loads(row[0])
            return body
    else:
        for entry in records(p):
            if entry.get("seq") == seq:
                return entry
    raise LookupError(f"audit trail {p} has no record seq {seq}")
