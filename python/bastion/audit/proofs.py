"""Proof documents a third party can check with only the public key: inclusion and consistency.

``inclusion_proof(trail, seq)`` proves that record ``seq`` (as stored: sealed content stays sealed)
is in the tree a signed head commits to; ``consistency_proof(trail, old_size)`` proves that the
signed head of ``old_size`` records is a prefix of a later one (what a witness that kept the old head
asks for). Both are JSON documents (``"type": "inclusion" | "consistency"``) carrying the signed
head(s), so ``check_proof(doc, public_key)`` needs nothing from the operator: it checks the
signatures and recomputes the root(s) with RFC 9162 §2.1.3.2 / §2.1.4.2. The prover rebuilds the tree
from the trail, and refuses when the trail no longer matches the head (run ``verify``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.audit.heads import HeadEntry, SignedTreeHead, heads_path_for, read_heads
from bastion.audit.keys import VerifyKey
from bastion.audit.merkle import MerkleTree, verify_consistency, verify_inclusion
from bastion.audit.trail import record_leaf, records

PROOF_VERSION = 1


def signed_heads(trail: str | os.PathLike[str], heads_path: str | os.PathLike[str] | None = None) -> list[HeadEntry]:
    """The trail's signed tree heads in order; ValueError when the heads log is missing or unreadable."""
    path = Path(heads_path) if heads_path else heads_path_for(trail)
    if not path.is_file():
        raise ValueError(f"no signed tree heads: {path} does not exist (sign the trail: AuditLog(signing_key=...))")
    heads = []
    for lineno, entry in read_heads(path):
        if isinstance(entry, str):
            raise ValueError(f"{path} line {lineno}: {entry}")
        heads.append(entry)
    if not heads:
        raise ValueError(f"no signed tree heads in {path} yet")
    return heads


def _tree(trail: str | os.PathLike[str], size: int) -> tuple[MerkleTree, list[dict[str, Any]]]:
    """The tree over the first ``size`` stored records, and those records."""
    stored: list[dict[str, Any]] = []
    for entry in records(trail):
        if len(stored) == size:
            break
        stored.append(entry)
    if len(stored) < size:
        raise ValueError(f"audit trail {trail} holds {len(stored)} records, fewer than the signed head's {size}: "
                         "it was truncated (run: python -m bastion audit verify)")
    return MerkleTree(record_leaf(e) for e in stored), stored


def _matching(tree: MerkleTree, head: SignedTreeHead, trail: str | os.PathLike[str]) -> None:
    if tree.root(head.tree_size) != head.root_hash:
        raise ValueError(f"audit trail {trail} no longer matches its signed tree head of size {head.tree_size} "
                         "(run: python -m bastion audit verify)")


def inclusion_proof(trail: str | os.PathLike[str], seq: int, tree_size: int | None = None, *,
                    heads_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The inclusion proof of record ``seq`` against the latest signed head covering it (or ``tree_size``'s)."""
    heads = signed_heads(trail, heads_path)
    covering = [h.head for h in heads if h.head.tree_size > seq and (tree_size is None or h.head.tree_size == tree_size)]
    if not covering:
        last = heads[-1].head.tree_size
        raise ValueError(f"no signed tree head {'of size ' + str(tree_size) + ' ' if tree_size else ''}covers record "
                         f"seq {seq} (the last signed head covers {last} records; records after it are signed at the "
                         "next head)")
    head = covering[-1]
    tree, stored = _tree(trail, head.tree_size)
    _matching(tree, head, trail)
    return {"type": "inclusion", "v": PROOF_VERSION, "seq": seq, "tree_size": head.tree_size,
            "leaf_hash": tree.leaf(seq).hex(), "audit_path": [h.hex() for h in tree.inclusion_proof(seq, head.tree_size)],
            "head": head.to_json(), "record": stored[seq]}


def consistency_proof(trail: str | os.PathLike[str], old_size: int, new_size: int | None = None, *,
                      heads_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The consistency proof between the signed heads of ``old_size`` and ``new_size`` (default: the latest)."""
    heads = {h.head.tree_size: h.head for h in signed_heads(trail, heads_path)}
    new_size = max(heads) if new_size is None else new_size
    for size in (old_size, new_size):
        if size not in heads:
            raise ValueError(f"no signed tree head of size {size} (signed sizes: {sorted(heads)[-5:]}...)")
    if not 0 < old_size <= new_size:
        raise ValueError(f"a consistency proof goes from a smaller head to a larger one, not {old_size} -> {new_size}")
    tree, _ = _tree(trail, new_size)
    _matching(tree, heads[new_size], trail)
    return {"type": "consistency", "v": PROOF_VERSION, "old_head": heads[old_size].to_json(),
            "new_head": heads[new_size].to_json(),
            "proof": [h.hex() for h in tree.consistency_proof(old_size, new_size)] if old_size < new_size else []}


@dataclass(frozen=True)
class ProofCheck:
    """The verdict of ``check_proof``: ``ok`` and a sentence saying what was (or was not) proven."""

    ok: bool
    message: str

    def __str__(self) -> str:
        return ("OK: " if self.ok else "FAILED: ") + self.message


def _head(obj: Any, key: VerifyKey, name: str) -> SignedTreeHead:
    head = SignedTreeHead.from_json(obj)
    problem = head.verify(key)
    if problem is not None:
        raise ValueError(f"{name}: {problem}")
    return head


def check_proof(doc: dict[str, Any], key: VerifyKey, *, record: dict[str, Any] | None = None,
                leaf_hash: bytes | None = None) -> ProofCheck:
    """Check a proof document with the public key alone.

    For an inclusion proof the leaf comes from ``record`` (the record as stored, as the checker got
    it) or ``leaf_hash`` when given, else from the record embedded in the document.
    """
    try:
        if doc.get("type") == "consistency":
            old, new = _head(doc["old_head"], key, "old head"), _head(doc["new_head"], key, "new head")
            proof = [bytes.fromhex(h) for h in doc["proof"]]
            if not verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof):
                return ProofCheck(False, f"the signed tree of {new.tree_size} records does NOT extend the signed tree "
                                         f"of {old.tree_size} records: history was rewritten")
            return ProofCheck(True, f"the signed tree of {new.tree_size} records ({new.time}) extends the signed tree "
                                    f"of {old.tree_size} records ({old.time}); key id {key.key_id[:16]}...")
        if doc.get("type") != "inclusion":
            raise ValueError(f"unknown proof type {doc.get('type')!r}")
        head = _head(doc["head"], key, "head")
        seq = int(doc["seq"])
        if int(doc["tree_size"]) != head.tree_size:
            raise ValueError("the proof's tree_size differs from its head's")
        if leaf_hash is not None:
            leaf, source = leaf_hash, "the given leaf hash"
        elif record is not None:
            leaf, source = record_leaf(record), "the given record"
        else:
            leaf, source = record_leaf(doc["record"]), "the record in the proof"
        path = [bytes.fromhex(h) for h in doc["audit_path"]]
    except (KeyError, TypeError, ValueError) as e:
        return ProofCheck(False, f"malformed or unsigned proof ({e})")
    if not verify_inclusion(seq, head.tree_size, leaf, path, head.root_hash):
        return ProofCheck(False, f"{source} (leaf {leaf.hex()[:16]}...) is NOT record seq {seq} of the signed tree "
                                 f"of {head.tree_size} records")
    return ProofCheck(True, f"{source} (leaf {leaf.hex()[:16]}...) is record seq {seq} of the signed tree of "
                            f"{head.tree_size} records ({head.time}); key id {key.key_id[:16]}...")
