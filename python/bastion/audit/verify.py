"""Verify an audit trail: the hash chain, and for a signed trail its tree heads, naming the first bad record.

What the chain proves: any edit of a stored record, any reordering and any deletion inside the
trail is detected. Cutting records off the *end* leaves a valid shorter chain, and whoever can write
the file can rewrite every record and recompute every hash. Against both, a signed trail
(``AuditLog(signing_key=...)``) is verified with the public key (``public_key=``):

* every signed tree head in ``PATH.heads`` must carry a good Ed25519 signature by that key, in order
  (sizes and times never decrease);
* the leaf hashes each head lists must, with the earlier heads' leaves, reproduce its signed root:
  that authenticates them, so a record whose leaf differs is named exactly (a record changed
  after it was signed); where a head's leaves were altered too, the records under that head are
  checked against its signed root and the first of them is named;
* each head must be consistent with the one before (an RFC 9162 consistency proof between them is
  built over the authenticated leaves and verified);
* a trail that ends before the last head's size was truncated.

Without a signed head, a checkpoint kept elsewhere (``AuditAck.checkpoint``, "SEQ:HASH") catches
truncation and rewriting up to it. Nothing here modifies the trail.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.audit.chain import ChainTail, link_problem
from bastion.audit.heads import HeadEntry, heads_path_for, read_heads
from bastion.audit.keys import SigningKey, VerifyKey, load_verify_key
from bastion.audit.merkle import CompactRange, MerkleTree, verify_consistency
from bastion.audit.trail import Unreadable, entries, record_leaf


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify``: ``records`` valid records before ``first_bad_seq`` (None when ok).

    For a signed trail: ``heads`` verified tree heads by ``key_id``, the last covering
    ``signed_size`` records; ``bad_head`` names a head (its line in the heads log) that failed.
    """

    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str | None = None
    last_hash: str | None = None
    heads: int = 0
    signed_size: int | None = None
    key_id: str | None = None
    bad_head: int | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.ok:
            where = f"at seq {self.first_bad_seq}" if self.first_bad_seq is not None else (
                f"in signed tree head line {self.bad_head}" if self.bad_head is not None else "")
            return f"TAMPERED {where}: {self.reason} ({self.records} valid records before it)".replace("  ", " ")
        text = f"OK: {self.records} records, chain intact (last hash {self.last_hash})"
        if self.key_id is not None:
            text += (f"; {self.heads} signed tree heads verified (key id {self.key_id[:16]}...), the last covers "
                     f"{self.signed_size} records")
        return "; ".join([text, *self.notes])


def _seq_mismatch_reason(expected: int, found: object, rest: Iterator[tuple[str, Any]]) -> str:
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


@dataclass
class _Walk:
    """What one pass over the chain found."""

    tail: ChainTail
    leaves: list[bytes]
    seen_hash: str | None = None
    bad: tuple[int, str] | None = None  # (seq, reason) of the first chain problem


def _walk_chain(path: Path, checkpoint: tuple[int, str] | None, want_leaves: bool) -> _Walk:
    walk = _Walk(ChainTail(), [])
    stream = entries(path)
    for where, entry in stream:
        if isinstance(entry, Unreadable):
            walk.bad = (walk.tail.next_seq, f"{where}: {entry.why}")
            return walk
        problem = link_problem(entry, walk.tail)
        if problem is not None:
            if problem.startswith("expected seq"):
                problem = _seq_mismatch_reason(walk.tail.next_seq, entry["seq"], stream)
            walk.bad = (walk.tail.next_seq, f"{where}: {problem}")
            return walk
        if checkpoint is not None and entry["seq"] == checkpoint[0]:
            walk.seen_hash = entry["hash"]
        if want_leaves:
            walk.leaves.append(record_leaf(entry))
        walk.tail = walk.tail.advance(entry)
    return walk


@dataclass
class _Heads:
    """The heads that verified, the leaves they authenticate, and the first problem (line, reason)."""

    good: list[tuple[int, HeadEntry]] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    authenticated: int = 0  # how many of ``good`` had their leaves authenticated
    problem: tuple[int, str] | None = None


def _check_heads(heads_path: Path, key: VerifyKey) -> _Heads:
    out = _Heads()
    if not heads_path.is_file():
        out.problem = (0, f"no signed tree heads: {heads_path} does not exist (the trail is unsigned, or its heads "
                          "log was removed)")
        return out
    tree, prev = CompactRange(), None
    for lineno, entry in read_heads(heads_path):
        if isinstance(entry, str):
            out.problem = (lineno, entry)
            return out
        head = entry.head
        bad = head.verify(key)
        if bad is None and prev is not None and (head.tree_size < prev.tree_size or head.timestamp_ms < prev.timestamp_ms):
            bad = f"goes back (size {head.tree_size} after {prev.tree_size}, or an earlier time)"
        if bad is not None:
            out.problem = (lineno, f"tree head of size {head.tree_size}: {bad}")
            return out
        if out.authenticated == len(out.good):  # every earlier head authenticated: try this one
            trial = tree.copy()
            trial.extend(entry.leaves)
            if trial.size == head.tree_size and trial.root() == head.root_hash:
                tree = trial
                out.leaves.extend(entry.leaves)
                out.authenticated += 1
        out.good.append((lineno, entry))
        prev = head
    if not out.good:
        out.problem = (0, f"no signed tree heads in {heads_path}")
    return out


def _consistency_problem(heads: _Heads) -> tuple[int, str] | None:
    """Each authenticated head must be consistent with the previous one (RFC 9162 proof, verified)."""
    tree = MerkleTree(heads.leaves)
    for (_, old), (lineno, new) in zip(heads.good, heads.good[1:heads.authenticated], strict=False):
        o, n = old.head, new.head
        if o.tree_size == 0:
            continue
        proof = tree.consistency_proof(o.tree_size, n.tree_size) if o.tree_size < n.tree_size else []
        if not verify_consistency(o.tree_size, n.tree_size, o.root_hash, n.root_hash, proof):
            return lineno, f"tree head of size {n.tree_size} is not consistent with the head of size {o.tree_size}"
    return None


def _span(first: int, last: int, one: str, many: str) -> str:
    """"record seq 4 <one>" or "records seq 4..7 <many>"."""
    return f"record seq {first} {one}" if first == last else f"records seq {first}..{last} {many}"


def _records_problem(walk: _Walk, heads: _Heads) -> tuple[int, str] | None:
    """The first record that does not match the signed heads, or the truncation, as (seq, reason)."""
    for k, (have, signed) in enumerate(zip(walk.leaves, heads.leaves, strict=False)):
        if have != signed:
            size, when = next((e.head.tree_size, e.head.time) for _, e in heads.good if e.head.tree_size > k)
            return k, (f"record seq {k} differs from the record signed in the tree head of size {size} ({when}): "
                       "it was changed after it was signed")
    tree: MerkleTree | None = None
    prev = 0
    for _, entry in heads.good[heads.authenticated:]:  # heads whose leaf lists were altered: check roots
        size = entry.head.tree_size
        if size <= len(walk.leaves):
            tree = tree or MerkleTree(walk.leaves)
            if tree.root(size) != entry.head.root_hash:
                start = max(prev, len(heads.leaves))
                return start, (f"{_span(start, size - 1, 'does', 'do')} not match the signed tree head of size {size} "
                               f"(the heads log's leaf hashes were altered too, so the first changed one is not known)")
        prev = size
    last = heads.good[-1][1].head if heads.good else None
    if last is not None and walk.bad is None and walk.tail.next_seq < last.tree_size:
        n = walk.tail.next_seq
        return n, (f"{_span(n, last.tree_size - 1, 'is', 'are')} missing: the trail ends before the signed tree head "
                   f"of size {last.tree_size} ({last.time}); records were cut off the end")
    return None


def verify(
    path: str | os.PathLike[str],
    checkpoint: tuple[int, str] | None = None,
    *,
    public_key: VerifyKey | SigningKey | str | os.PathLike[str] | bytes | None = None,
    heads_path: str | os.PathLike[str] | None = None,
) -> VerifyResult:
    """Check the whole trail at ``path`` (``.jsonl`` or SQLite); never modifies it.

    ``checkpoint`` (seq, hash) of a record acknowledged earlier also catches records cut off the end.
    ``public_key`` (the signer's Ed25519 public key, or its source): also check the signed tree heads
    in ``heads_path`` (default ``PATH.heads``). A bad key source raises ``AuditKeyError``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"audit trail {p} does not exist")
    key = load_verify_key(public_key) if public_key is not None else None
    walk = _walk_chain(p, checkpoint, want_leaves=key is not None)
    heads = _check_heads(Path(heads_path) if heads_path else heads_path_for(p), key) if key is not None else None

    failures: list[tuple[int, str]] = [walk.bad] if walk.bad is not None else []
    if heads is not None:
        failures += [x for x in (_records_problem(walk, heads),) if x is not None]
    if checkpoint is not None and walk.bad is None:
        problem = _checkpoint_problem(walk.tail, checkpoint, walk.seen_hash)
        if problem is not None:
            failures.append((min(walk.tail.next_seq, checkpoint[0]), problem))
    if failures:
        seq, reason = min(failures)
        return VerifyResult(False, seq, seq, reason)
    head_problem = None if heads is None else (heads.problem or _consistency_problem(heads))
    if head_problem is not None:
        return VerifyResult(False, walk.tail.next_seq, None, head_problem[1], bad_head=head_problem[0])
    result = VerifyResult(True, walk.tail.next_seq, None, None, walk.tail.last_hash)
    if heads is None or key is None:
        if (Path(heads_path) if heads_path else heads_path_for(p)).is_file():
            result.notes.append("signed tree heads not checked (give the public key)")
        return result
    signed_size = heads.good[-1][1].head.tree_size
    if walk.tail.next_seq > signed_size:
        result.notes.append(f"{walk.tail.next_seq - signed_size} newer records not yet covered by a signed head")
    return dataclasses.replace(result, heads=len(heads.good), signed_size=signed_size, key_id=key.key_id)
