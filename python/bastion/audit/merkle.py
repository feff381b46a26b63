"""The Merkle tree over the audit records: RFC 6962 hashing, proofs and their RFC 9162 verification.

The leaves are the records in chain order; a record's leaf data is its canonical JSON as stored
(chain fields included), so ``leaf_hash = SHA-256(0x00 || canonical_json(record))`` and an interior
node is ``SHA-256(0x01 || left || right)``. For n leaves the tree splits at k, the largest power of
two below n (RFC 6962 §2.1), so a tree of any size has one root.

* ``CompactRange`` is the writer's state: the roots of the perfect subtrees that make up the tree
  (its "right frontier", one per set bit of the size). Appending costs O(1) amortized hashing and
  the root O(log n); nothing is recomputed.
* ``MerkleTree`` holds every leaf and the perfect subtrees above them (built once, O(n)), and gives
  the root of any prefix, inclusion proofs (RFC 6962 §2.1.1 PATH) and consistency proofs (§2.1.2
  SUBPROOF) in O(log² n).
* ``verify_inclusion`` / ``verify_consistency`` are RFC 9162 §2.1.3.2 and §2.1.4.2 verbatim.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256() (RFC 6962 §2.1)


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2): where RFC 6962 splits n leaves."""
    if n < 2:
        raise ValueError(f"split_point needs n >= 2, got {n}")
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The right frontier of a tree of ``size`` leaves: O(log n) hashes, O(1) amortized per append."""

    __slots__ = ("_hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a frontier of a {size}-leaf tree has {bin(size).count('1')} hashes, got {len(hashes)}")
        self.size = size
        self._hashes = list(hashes)

    @property
    def hashes(self) -> list[bytes]:
        """The perfect-subtree roots, largest (leftmost) first."""
        return list(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash: merge it with the equal-sized subtrees it completes."""
        h, n = leaf, self.size
        while n & 1:
            h = node_hash(self._hashes.pop(), h)
            n >>= 1
        self._hashes.append(h)
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append several leaf hashes in order."""
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """The RFC 6962 root of the tree so far (fold the frontier from the right)."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> CompactRange:
        """An independent copy."""
        return CompactRange(self.size, self._hashes)


class MerkleTree:
    """All the leaves and every perfect subtree above them: roots of prefixes and proofs."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [list(leaves)]
        for leaf in self._levels[0]:
            if len(leaf) != 32:
                raise ValueError("leaf hashes are 32 bytes")
        while len(self._levels[-1]) > 1:
            below = self._levels[-1]
            self._levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        return self._levels[0][index]

    def _range(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end); start is aligned to a power of two >= the range's split."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:  # a perfect, aligned subtree: stored
            return self._levels[n.bit_length() - 1][start // n]
        k = split_point(n)
        return node_hash(self._range(start, start + k), self._range(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """The root of the first ``size`` leaves (default: all)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} outside 0..{self.size}")
        return EMPTY_ROOT if size == 0 else self._range(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of the first ``size`` leaves (RFC 6962 PATH)."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"no leaf {index} in a tree of {size} leaves (have {self.size})")
        path: list[bytes] = []
        start, end = 0, size
        while end - start > 1:  # descend, collecting the sibling of the side holding the leaf
            k = split_point(end - start)
            if index - start < k:
                path.append(self._range(start + k, end))
                end = start + k
            else:
                path.append(self._range(start, start + k))
                start += k
        path.reverse()  # leaf-to-root order
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Proof that the first ``old_size`` leaves are a prefix of the first ``new_size`` (RFC 6962 PROOF)."""
        new_size = self.size if new_size is None else new_size
        if not 0 < old_size <= new_size <= self.size:
            raise ValueError(f"no consistency proof from size {old_size} to {new_size} (have {self.size})")
        proof: list[bytes] = []
        m, start, end, complete = old_size, 0, new_size, True
        while True:  # SUBPROOF(m, D[start:end], complete)
            n = end - start
            if m == n:
                if not complete:
                    proof.append(self._range(start, end))
                break
            k = split_point(n)
            if m <= k:
                proof.append(self._range(start + k, end))
                end = start + k
            else:
                proof.append(self._range(start, start + k))
                m, start, complete = m - k, start + k, False
        proof.reverse()
        return proof


def _lsb(x: int) -> bool:
    return bool(x & 1)


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root an inclusion proof implies (RFC 9162 §2.1.3.2 steps 1-4), or None when malformed."""
    if index >= size or index < 0:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if _lsb(fn) or fn == sn:
            r = node_hash(p, r)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` prove leaf ``index`` (hash ``leaf``) in the tree ``root`` of ``size``?"""
    return root_from_inclusion(index, size, leaf, path) == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does ``proof`` show the tree ``old_root`` is a prefix of the tree ``new_root``?"""
    if old_size < 1 or new_size < old_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while _lsb(fn):
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if _lsb(fn) or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
