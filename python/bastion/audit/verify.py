"""Verify an audit trail: walk the hash chain and name the first tampered, moved or missing record.

What the chain proves: any edit of a stored record, any reordering and any deletion inside the
trail is detected. Cutting records off the *end* leaves a valid shorter chain: to catch that, keep
a checkpoint elsewhere (``AuditAck.checkpoint``, "SEQ:HASH" of an acknowledged record, e.g. in your
log pipeline) and pass it to ``verify``; a trail that ends before it, or was rewritten up to it, fails.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.audit.chain import ChainTail, link_problem

# Columns of the SQLite table that duplicate body fields; they must agree with the hashed body.
_SQLITE_MIRRORED = ("seq", "record_id", "time", "outcome", "prev_hash", "hash")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify``: ``records`` valid records before ``first_bad_seq`` (None when ok)."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str | None = None
    last_hash: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.records} records, chain intact (last hash {self.last_hash})"
        return f"TAMPERED at seq {self.first_bad_seq}: {self.reason} ({self.records} valid records before it)"


class _Unreadable:
    """An entry that could not even be parsed; carries why."""

    def __init__(self, why: str) -> None:
        self.why = why


def _jsonl_entries(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"line {lineno}"
            if not raw.strip():
                yield where, _Unreadable("blank line inside the trail")
                continue
            try:
                yield where, json.loads(raw)
            except ValueError as e:
                yield where, _Unreadable(f"not valid JSON ({e})")


def _sqlite_entries(path: Path) -> Iterator[tuple[str, Any]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cols = ", ".join(_SQLITE_MIRRORED)
        for row in db.execute(f"SELECT rowid, {cols}, body FROM audit_records ORDER BY rowid"):
            where = f"row {row[0]}"
            try:
                body = json.loads(row[-1])
            except ValueError as e:
                yield where, _Unreadable(f"body is not valid JSON ({e})")
                continue
            columns = dict(zip(_SQLITE_MIRRORED, row[1:-1], strict=True))
            bad = [c for c, v in columns.items() if isinstance(body, dict) and body.get(c) != v]
            yield where, _Unreadable(f"column(s) {', '.join(bad)} differ from the hashed body") if bad else body
    finally:
        db.close()


def _entries(path: Path) -> Iterator[tuple[str, Any]]:
    if path.suffix == ".jsonl":
        return _jsonl_entries(path)
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return _sqlite_entries(path)
    raise ValueError(f"audit path {path}: unsupported suffix {path.suffix!r} (use .jsonl, .db or .sqlite)")


def _seq_mismatch_reason(expected: int, found: Any, rest: Iterator[tuple[str, Any]]) -> str:
    """Tell a moved record from a missing one by looking for the expected seq further on."""
    later = any(isinstance(e, dict) and e.get("seq") == expected for _, e in rest)
    if later:
        return f"record seq {expected} is out of order (seq {found} appears in its place)"
    return f"record seq {expected} is missing (the trail jumps to seq {found})"


def parse_checkpoint(text: str) -> tuple[int, str]:
    """Parse "SEQ:HASH" (as ``AuditAck.checkpoint`` prints it); ValueError naming the problem."""
    seq_text, sep, digest = text.partition(":")
    if not sep or not seq_text.isdigit() or len(digest) != 64:
        raise ValueError(f"checkpoint {text!r}: expected SEQ:HASH with a 64-hex-digit sha256")
    return int(seq_text), digest


def _checkpoint_problem(tail: ChainTail, checkpoint: tuple[int, str], seen_hash: str | None) -> str | None:
    seq, digest = checkpoint
    if tail.next_seq <= seq:
        return (f"records seq {tail.next_seq}..{seq} are missing: the trail ends before checkpoint seq {seq}")
    if seen_hash != digest:
        return f"record seq {seq} does not match the checkpoint hash: the trail was rewritten up to it"
    return None


def verify(path: str | os.PathLike[str], checkpoint: tuple[int, str] | None = None) -> VerifyResult:
    """Check the whole chain at ``path`` (``.jsonl`` or SQLite); never modifies the trail.

    ``checkpoint`` (seq, hash) of a record acknowledged earlier also catches records cut off the end.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"audit trail {p} does not exist")
    tail = ChainTail()
    seen_hash: str | None = None
    entries = _entries(p)
    for where, entry in entries:
        if isinstance(entry, _Unreadable):
            return VerifyResult(False, tail.next_seq, tail.next_seq, f"{where}: {entry.why}")
        problem = link_problem(entry, tail)
        if problem is not None:
            if problem.startswith("expected seq"):
                problem = _seq_mismatch_reason(tail.next_seq, entry["seq"], entries)
            return VerifyResult(False, tail.next_seq, tail.next_seq, f"{where}: {problem}")
        if checkpoint is not None and entry["seq"] == checkpoint[0]:
            seen_hash = entry["hash"]
        tail = tail.advance(entry)
    if checkpoint is not None:
        problem = _checkpoint_problem(tail, checkpoint, seen_hash)
        if problem is not None:
            bad = min(tail.next_seq, checkpoint[0])
            return VerifyResult(False, bad, bad, problem)
    return VerifyResult(True, tail.next_seq, None, None, tail.last_hash)
