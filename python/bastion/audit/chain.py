"""The hash chain: canonical JSON, record hashes and the link check shared by writer and verifier.

``hash = sha256(canonical_json(record without "hash"))`` where the record carries its ``seq`` and the
previous record's hash as ``prev_hash``; changing, dropping or moving any record therefore breaks
either its own hash or the link of the record after it. Canonical JSON here is sorted keys, no
insignificant whitespace, UTF-8, no NaN/Infinity: stable under a parse / re-serialize round trip,
which is all the verifier needs (it re-serializes what it parsed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64
CHAIN_FIELDS = ("seq", "prev_hash", "hash")


def canonical_json(obj: Any) -> str:
    """Serialize ``obj`` deterministically (sorted keys, compact separators, UTF-8, no NaN)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(body: dict[str, Any]) -> str:
    """The chain hash of a record body: sha256 over its canonical JSON, ``hash`` itself excluded."""
    unhashed = {k: v for k, v in body.items() if k != "hash"}
    return hashlib.sha256(canonical_json(unhashed).encode("utf-8", "surrogatepass")).hexdigest()


def link(body: dict[str, Any], seq: int, prev_hash: str) -> dict[str, Any]:
    """Return a copy of ``body`` placed at ``seq`` after ``prev_hash``, with its own hash set."""
    linked = dict(body)
    linked["seq"] = seq
    linked["prev_hash"] = prev_hash
    linked["hash"] = record_hash(linked)
    return linked


@dataclass(frozen=True)
class ChainTail:
    """Where the chain ends: the next record gets ``next_seq`` and links to ``last_hash``."""

    next_seq: int = 0
    last_hash: str = GENESIS_HASH

    def advance(self, linked: dict[str, Any]) -> ChainTail:
        """The tail after ``linked`` was appended."""
        return ChainTail(linked["seq"] + 1, linked["hash"])


def link_problem(body: Any, tail: ChainTail) -> str | None:
    """Why ``body`` cannot follow ``tail`` in a valid chain, or None when it can."""
    if not isinstance(body, dict):
        return f"entry is a JSON {type(body).__name__}, not an object"
    missing = [f for f in CHAIN_FIELDS if f not in body]
    if missing:
        return f"entry lacks chain field(s) {', '.join(missing)}"
    seq = body["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool):
        return f"seq {seq!r} is not an integer"
    if seq != tail.next_seq:
        return f"expected seq {tail.next_seq}, found seq {seq}"
    if body["hash"] != record_hash(body):
        return f"record seq {seq} was modified: its content does not match its hash"
    if body["prev_hash"] != tail.last_hash:
        return f"record seq {seq} does not link to the previous record (prev_hash mismatch)"
    return None
