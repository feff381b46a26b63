"""The Merkle tree against RFC 6962 itself: a naive recursive transcription of §2.1, the Certificate
Transparency reference vectors, and property-based checks of every proof for sizes 1..70."""

from __future__ import annotations

import hashlib

import pytest
from bastion.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# ---- RFC 6962 §2.1, transcribed literally (recursion over lists of leaf data) -------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """MTH(D[n])."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    return path(m, d[:k]) + [mth(d[k:])] if m < k else path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    return subproof(m, d[:k], b) + [mth(d[k:])] if m <= k else subproof(m - k, d[k:], False) + [mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n])."""
    return subproof(m, d, True)


# ---- the Certificate Transparency reference vectors ----------------------------------------------

CT_DATA = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                      "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
CT_INCLUSION = [(0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
                (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"])]
CT_CONSISTENCY = [(2, 8, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                          "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
                  (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                          "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                          "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"])]


def test_ct_reference_roots_and_proofs():
    tree = MerkleTree(leaf_hash(x) for x in CT_DATA)
    assert tree.root(0) == EMPTY_ROOT == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert [tree.root(n).hex() for n in range(1, 9)] == CT_ROOTS
    for index, size, want in CT_INCLUSION:
        assert [h.hex() for h in tree.inclusion_proof(index, size)] == want
        assert verify_inclusion(index, size, tree.leaf(index), [bytes.fromhex(h) for h in want],
                                bytes.fromhex(CT_ROOTS[size - 1]))
    for first, second, want in CT_CONSISTENCY:
        assert [h.hex() for h in tree.consistency_proof(first, second)] == want
        assert verify_consistency(first, second, bytes.fromhex(CT_ROOTS[first - 1]),
                                  bytes.fromhex(CT_ROOTS[second - 1]), [bytes.fromhex(h) for h in want])


# ---- properties ------------------------------------------------------------------------------------

leaf_data = st.lists(st.binary(max_size=12), min_size=1, max_size=70)


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


@settings(max_examples=60, deadline=None)
@given(leaf_data)
def test_roots_and_frontier_match_the_rfc_for_every_prefix(data):
    leaves = [leaf_hash(x) for x in data]
    tree, frontier = MerkleTree(leaves), CompactRange()
    assert frontier.root() == EMPTY_ROOT
    for n in range(1, len(data) + 1):
        frontier.append(leaves[n - 1])
        want = mth(data[:n])
        assert tree.root(n) == want
        assert frontier.root() == want
        assert len(frontier.hashes) == bin(n).count("1")  # O(log n) state
        resumed = CompactRange(n, frontier.hashes)  # what a head's frontier restores
        assert resumed.root() == want


@settings(max_examples=60, deadline=None)
@given(leaf_data, st.data())
def test_inclusion_proofs_match_the_rfc_and_verify(data, draw):
    leaves, tree = [leaf_hash(x) for x in data], MerkleTree(leaf_hash(x) for x in data)
    n = draw.draw(st.integers(1, len(data)))
    root = mth(data[:n])
    for m in range(n):
        got = tree.inclusion_proof(m, n)
        assert got == path(m, data[:n])
        assert verify_inclusion(m, n, leaves[m], got, root)
        assert not verify_inclusion(m, n, _flip(leaves[m]), got, root)  # a changed record
        if got:
            assert not verify_inclusion(m, n, leaves[m], [_flip(got[0]), *got[1:]], root)
            assert not verify_inclusion(m, n, leaves[m], got[:-1], root)
        assert not verify_inclusion(m, n, leaves[m], [*got, leaves[m]], root)
    assert root_from_inclusion(n, n, leaves[0], []) is None  # index outside the tree


@settings(max_examples=60, deadline=None)
@given(leaf_data, st.data())
def test_consistency_proofs_match_the_rfc_and_verify(data, draw):
    tree = MerkleTree(leaf_hash(x) for x in data)
    n = draw.draw(st.integers(1, len(data)))
    new_root = mth(data[:n])
    for m in range(1, n + 1):
        got = tree.consistency_proof(m, n)
        assert got == proof(m, data[:n])
        old_root = mth(data[:m])
        assert verify_consistency(m, n, old_root, new_root, got)
        assert not verify_consistency(m, n, _flip(old_root), new_root, got)
        assert not verify_consistency(m, n, old_root, _flip(new_root), got)
        if got:
            assert not verify_consistency(m, n, old_root, new_root, [_flip(got[0]), *got[1:]])
            assert not verify_consistency(m, n, old_root, new_root, got[:-1])


@settings(max_examples=40, deadline=None)
@given(leaf_data, st.data())
def test_rewritten_history_fails_consistency(data, draw):
    """A tree whose first m leaves were changed cannot be proven consistent with the old root."""
    n = draw.draw(st.integers(2, max(2, len(data))))
    data = (data * 2)[:n] if len(data) < n else data[:n]
    m = draw.draw(st.integers(1, n - 1))
    k = draw.draw(st.integers(0, m - 1))
    forged = list(data)
    forged[k] = forged[k] + b"!"
    forged_tree = MerkleTree(leaf_hash(x) for x in forged)
    assert not verify_consistency(m, n, mth(data[:m]), forged_tree.root(n), forged_tree.consistency_proof(m, n))


def test_bad_arguments_are_refused():
    tree = MerkleTree(leaf_hash(bytes([i])) for i in range(5))
    with pytest.raises(ValueError):
        tree.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        tree.consistency_proof(0, 5)
    with pytest.raises(ValueError):
        tree.consistency_proof(3, 6)
    with pytest.raises(ValueError):
        CompactRange(3, [leaf_hash(b"")])  # 3 leaves need 2 frontier hashes
    assert not verify_consistency(3, 3, tree.root(3), tree.root(4), [])
    assert verify_consistency(3, 3, tree.root(3), tree.root(3), [])
    assert not verify_consistency(4, 3, tree.root(4), tree.root(3), [])
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
