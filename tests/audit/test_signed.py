"""Signed tree heads: an attacker with write access but without the signing key is caught and named."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from bastion.audit import AuditKeyError, AuditLog, SigningKey, verify
from bastion.audit.chain import canonical_json, link
from bastion.audit.heads import HeadEntry, HeadLog, SignedTreeHead, heads_path_for, read_heads
from bastion.audit.keys import load_signing_key, load_verify_key
from bastion.audit.merkle import CompactRange, MerkleTree
from bastion.audit.proofs import check_proof, consistency_proof, inclusion_proof

from .audit_helpers import make_record, write_signed, write_trail

SUFFIXES = [".jsonl", ".db"]


def signed_trail(path, n, signing, every=4, **kwargs):
    """``n`` records with a signed head after every ``every`` (checkpoint) and at close."""
    with AuditLog(path, fsync="never", signing_key=signing, **kwargs) as log:
        for i in range(n):
            log.append(make_record(i)).result(5)
            if (i + 1) % every == 0:
                log.checkpoint(5)
    return path


def sign_heads(path, sizes, key):
    """Sign heads of ``sizes`` over the trail as it stands (what a key holder could do)."""
    from bastion.audit.trail import record_leaf

    leaves = [record_leaf(b) for b in stored(path)]
    log = HeadLog(heads_path_for(path))
    prev = 0
    for size in sizes:
        tree = MerkleTree(leaves[:size])
        frontier = CompactRange()
        frontier.extend(leaves[:size])
        head = SignedTreeHead.sign(key, size, tree.root(), int(time.time() * 1000))
        log.append(HeadEntry(head, leaves[prev:size], frontier.hashes))
        prev = size
    log.close()


def stored(path):
    """The stored records, in order."""
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in path.read_text().splitlines()]
    db = sqlite3.connect(path)
    rows = [json.loads(b) for (b,) in db.execute("SELECT body FROM audit_records ORDER BY seq")]
    db.close()
    return rows


def rewrite(path, bodies):
    """Store ``bodies`` as the whole trail, re-linking the chain: every hash recomputed."""
    prev, linked = "0" * 64, []
    for seq, body in enumerate(bodies):
        entry = link({k: v for k, v in body.items() if k not in ("seq", "prev_hash", "hash")}, seq, prev)
        prev = entry["hash"]
        linked.append(entry)
    if path.suffix == ".jsonl":
        path.write_text("".join(canonical_json(e) + "\n" for e in linked))
        return
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
    db.execute("DROP TRIGGER IF EXISTS audit_records_no_delete")
    db.execute("DELETE FROM audit_records")
    db.executemany("INSERT INTO audit_records (seq, record_id, time, outcome, prev_hash, hash, body) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?)", [(e["seq"], e["record_id"], e["time"], e["outcome"], e["prev_hash"],
                                             e["hash"], canonical_json(e)) for e in linked])
    db.commit()
    db.close()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_signed_trail_verifies(tmp_path, keys, suffix):
    signing, public, _ = keys
    path = signed_trail(tmp_path / f"t{suffix}", 10, signing)
    heads = [e for _, e in read_heads(heads_path_for(path))]
    assert [e.head.tree_size for e in heads] == [4, 8, 10]
    result = verify(path, public_key=public)
    assert result.ok, result.reason
    assert (result.heads, result.signed_size, result.key_id) == (3, 10, load_verify_key(public).key_id)
    assert "3 signed tree heads verified" in str(result)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_rewritten_trail_with_recomputed_hashes_is_caught_and_the_forged_record_named(tmp_path, keys, suffix):
    signing, public, _ = keys
    path = signed_trail(tmp_path / f"t{suffix}", 10, signing)
    bodies = stored(path)
    bodies[5]["outcome"] = "blocked"  # hide what happened to request 5
    bodies[5]["tenant"] = "someone-else"
    rewrite(path, bodies)
    assert verify(path).ok  # the chain alone is fooled: every hash was recomputed
    result = verify(path, public_key=public)
    assert not result.ok
    assert result.first_bad_seq == 5 and result.records == 5
    assert "record seq 5 differs from the record signed" in result.reason and "size 8" in result.reason


def test_rewriting_the_heads_leaves_too_still_fails_and_names_the_range(tmp_path, keys):
    signing, public, _ = keys
    path = signed_trail(tmp_path / "t.jsonl", 10, signing)
    bodies = stored(path)
    bodies[6]["user"] = "mallory"
    rewrite(path, bodies)
    from bastion.audit.trail import record_leaf

    heads_file = heads_path_for(path)
    lines = [json.loads(x) for x in heads_file.read_text().splitlines()]
    lines[1]["leaves"] = [record_leaf(b).hex() for b in stored(path)[4:8]]  # the attacker's own leaves
    heads_file.write_text("".join(canonical_json(x) + "\n" for x in lines))
    result = verify(path, public_key=public)
    assert not result.ok and result.first_bad_seq == 4
    assert "records seq 4..7 do not match the signed tree head of size 8" in result.reason


def test_heads_signed_by_another_key_are_refused(tmp_path, keys):
    signing, public, _ = keys
    path = signed_trail(tmp_path / "t.jsonl", 6, signing)
    bodies = stored(path)
    bodies[2]["outcome"] = "failed"
    forged = tmp_path / "forged.jsonl"
    rewrite(forged, bodies)
    mallory = SigningKey.generate()
    signed_trail(forged, 0, mallory)  # mallory re-signs the rewritten history with her own key
    forged.rename(path)
    heads_path_for(forged).rename(heads_path_for(path))
    result = verify(path, public_key=public)
    assert not result.ok and result.bad_head == 1
    assert f"signed by key id {mallory.key_id[:16]}" in result.reason
    # a head whose signature bytes were altered
    signed_trail(tmp_path / "u.jsonl", 3, signing)
    heads_file = heads_path_for(tmp_path / "u.jsonl")
    line = json.loads(heads_file.read_text())
    line["tree_size"] = 2
    heads_file.write_text(canonical_json(line) + "\n")
    assert "signature does not verify" in verify(tmp_path / "u.jsonl", public_key=public).reason


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncation_after_a_signed_head_is_caught(tmp_path, keys, suffix):
    signing, public, _ = keys
    path = signed_trail(tmp_path / f"t{suffix}", 10, signing)
    rewrite(path, stored(path)[:7])  # the last three records cut off: a valid, shorter chain
    assert verify(path).ok
    result = verify(path, public_key=public)
    assert not result.ok and result.first_bad_seq == 7
    assert "records seq 7..9 are missing" in result.reason and "cut off the end" in result.reason


def test_a_deleted_heads_log_is_not_a_silent_pass(tmp_path, keys):
    signing, public, _ = keys
    path = signed_trail(tmp_path / "t.jsonl", 4, signing)
    heads_path_for(path).unlink()
    result = verify(path, public_key=public)
    assert not result.ok and "no signed tree heads" in result.reason


def test_witness_gets_every_head_and_keeps_truncation_of_both_files_visible(tmp_path, keys):
    signing, public, _ = keys
    seen = []
    path = signed_trail(tmp_path / "t.jsonl", 8, signing, witness=seen.append)
    assert [h.tree_size for h in seen] == [4, 8]
    assert all(h.verify(load_verify_key(public)) is None for h in seen)
    # the attacker cuts the trail *and* the heads log back to the first head: locally consistent ...
    rewrite(path, stored(path)[:4])
    heads_file = heads_path_for(path)
    heads_file.write_text(heads_file.read_text().splitlines()[0] + "\n")
    assert verify(path, public_key=public).ok
    # ... but the witness's head of size 8 can no longer be proven from the trail
    with pytest.raises(ValueError, match="no signed tree head of size 8"):
        consistency_proof(path, 4, 8)


def test_heads_every_n_records_every_t_seconds_and_at_close(tmp_path, keys):
    signing, public, _ = keys
    path = tmp_path / "t.jsonl"
    seen = []
    log = AuditLog(path, fsync="never", signing_key=signing, head_every=3, head_interval_s=0.2, witness=seen.append)
    for i in range(3):
        log.append(make_record(i)).result(5)
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen and seen[0].tree_size == 3  # N records
    log.append(make_record(3)).result(5)
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [h.tree_size for h in seen] == [3, 4]  # T seconds with one record waiting
    log.append(make_record(4)).result(5)
    log.close()
    assert [h.tree_size for h in seen] == [3, 4, 5]  # at close
    assert log.head is not None and log.head.tree_size == 5
    assert verify(path, public_key=public).heads == 3


def test_a_failing_witness_does_not_stop_the_trail(tmp_path, keys, caplog):
    signing, public, _ = keys

    def down(head):
        raise ConnectionError("witness unreachable")

    path = signed_trail(tmp_path / "t.jsonl", 5, signing, witness=down)
    assert verify(path, public_key=public).ok
    assert "witness hook failed" in caplog.text


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_reopen_continues_the_tree_and_hashes_records_left_unsigned_by_a_crash(tmp_path, keys, suffix):
    signing, public, _ = keys
    path = tmp_path / f"t{suffix}"
    write_signed(path, 5, signing)
    write_signed(path, 3, signing, start=5)
    heads_file = heads_path_for(path)
    # a crash after the records were durable, before their head: drop the last head
    heads_file.write_text(heads_file.read_text().splitlines()[0] + "\n")
    write_signed(path, 2, signing, start=8)
    sizes = [e.head.tree_size for _, e in read_heads(heads_file)]
    assert sizes == [5, 10]
    result = verify(path, public_key=public)
    assert result.ok and result.records == 10, result.reason


def test_a_torn_head_line_is_dropped_on_reopen(tmp_path, keys):
    signing, public, _ = keys
    path = tmp_path / "t.jsonl"
    write_signed(path, 3, signing)
    with open(heads_path_for(path), "ab") as f:
        f.write(b'{"tree_size": 9, "half a he')
    write_signed(path, 2, signing, start=3)
    assert verify(path, public_key=public).ok


def test_reopening_a_truncated_signed_trail_is_refused(tmp_path, keys):
    signing, _, _ = keys
    path = tmp_path / "t.jsonl"
    write_signed(path, 6, signing)
    rewrite(path, stored(path)[:4])
    with pytest.raises(Exception, match="records were cut off the end"):
        AuditLog(path, signing_key=signing)


def test_key_problems_are_clear_errors_at_open(tmp_path, keys, monkeypatch):
    signing, public, _ = keys
    path = tmp_path / "t.jsonl"
    with pytest.raises(AuditKeyError, match=r"signing key: file .*missing\.pem does not exist"):
        AuditLog(path, signing_key=tmp_path / "missing.pem")
    with pytest.raises(AuditKeyError, match="holds a public key"):
        AuditLog(path, signing_key=public)
    (tmp_path / "junk.pem").write_bytes(b"not a key at all")
    with pytest.raises(AuditKeyError, match="neither a PEM Ed25519 private key"):
        AuditLog(path, signing_key=tmp_path / "junk.pem")
    with pytest.raises(AuditKeyError, match="environment variable BASTION_TEST_KEY is not set"):
        AuditLog(path, signing_key="env:BASTION_TEST_KEY")
    write_signed(path, 2, signing)
    with pytest.raises(AuditKeyError, match="is signed .* open it with signing_key="):
        AuditLog(path)  # never silently continued unsigned
    with pytest.raises(AuditKeyError, match="not the trail's key, or the heads log was altered"):
        AuditLog(path, signing_key=SigningKey.generate())
    monkeypatch.setenv("BASTION_TEST_KEY", signing.read_text())  # the PEM through the environment
    write_signed(path, 1, "env:BASTION_TEST_KEY")
    assert verify(path, public_key=public).records == 3
    assert not path.with_suffix(".jsonl.keys").exists()


def test_a_plain_trail_becomes_signed_from_its_first_head(tmp_path, keys):
    signing, public, _ = keys
    path = tmp_path / "t.jsonl"
    write_trail(path, 4)  # an existing unsigned trail
    write_signed(path, 2, signing, start=4)
    result = verify(path, public_key=public)
    assert result.ok and result.signed_size == 6


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_inclusion_proof_verifies_and_fails_for_a_changed_record(tmp_path, keys, suffix):
    signing, public, _ = keys
    path = signed_trail(tmp_path / f"t{suffix}", 10, signing)
    key = load_verify_key(public)
    for seq in (0, 3, 7, 9):
        doc = inclusion_proof(path, seq)
        assert doc["tree_size"] == 10  # the latest signed head
        assert check_proof(doc, key).ok
        assert check_proof(json.loads(json.dumps(doc)), key, record=stored(path)[seq]).ok
        changed = dict(doc["record"], outcome="failed")
        verdict = check_proof(doc, key, record=changed)
        assert not verdict.ok and "is NOT record seq" in verdict.message
        assert not check_proof(doc, load_verify_key(SigningKey.generate())).ok  # not the log's key
    doc = inclusion_proof(path, 2, tree_size=4)  # against an earlier head a checker already holds
    assert doc["tree_size"] == 4 and check_proof(doc, key).ok
    assert not check_proof(doc | {"seq": 3}, key).ok
    with pytest.raises(ValueError, match="no signed tree head"):
        inclusion_proof(path, 10)


def test_prove_refuses_a_trail_that_no_longer_matches_its_heads(tmp_path, keys):
    signing, _, _ = keys
    path = signed_trail(tmp_path / "t.jsonl", 6, signing)
    bodies = stored(path)
    bodies[1]["outcome"] = "failed"
    rewrite(path, bodies)
    with pytest.raises(ValueError, match="no longer matches its signed tree head"):
        inclusion_proof(path, 1)


def test_consistency_between_heads_verifies_and_fails_when_history_was_rewritten(tmp_path, keys):
    signing, public, _ = keys
    key = load_verify_key(public)
    path = signed_trail(tmp_path / "t.jsonl", 10, signing)
    for old, new in ((4, 8), (4, 10), (8, 10), (10, 10)):
        doc = consistency_proof(path, old, new)
        assert check_proof(doc, key).ok, (old, new)
    # a log that forks its history, even one holding the key, cannot prove the fork consistent with a
    # head a witness kept from before
    kept = consistency_proof(path, 4, 10)["old_head"]
    bodies = stored(path)
    bodies[2]["outcome"] = "failed"
    forked = tmp_path / "forked.jsonl"
    rewrite(forked, bodies)
    sign_heads(forked, [4, 10], load_signing_key(signing))
    doc = consistency_proof(forked, 4, 10)
    assert check_proof(doc, key).ok  # the fork is consistent with itself ...
    verdict = check_proof(doc | {"old_head": kept}, key)  # ... not with the history the witness saw
    assert not verdict.ok and "does NOT extend" in verdict.message
