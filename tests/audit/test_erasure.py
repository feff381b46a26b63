"""Crypto-shredding: personal content sealed per subject and day; erasure and retention destroy keys,
the content is gone from every file, and the chain, the tree and every signature still verify."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from bastion.audit import AuditError, AuditKeyError, AuditLog, AuditRecord, ContentPolicy, Encryption, verify
from bastion.audit.keys import load_master_key
from bastion.audit.keystore import KeyStore, keystore_path_for
from bastion.audit.sealing import Sealer
from bastion.audit.trail import records

SECRET_WORDS = ("Zanzibar-lighthouse", "quokka-marmalade")


def personal(i: int, user: str, *, days_ago: int = 0, full: bool = True) -> AuditRecord:
    """A record whose prompt and output are personal text (kept in full: the worst case)."""
    policy = ContentPolicy(mode="full" if full else "hashed")
    when = (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(timespec="microseconds")
    return AuditRecord(request_id=f"r{i}", time=when, user=user, tenant="acme", outcome="served",
                       metadata={"end_user": user, "key_id": "k1"},
                       prompt=policy.capture(f"{user} asks about {SECRET_WORDS[0]} #{i}"),
                       output=policy.capture(f"{user}, the answer is {SECRET_WORDS[1]} #{i}"))


def write(path, recs, signing, master, **enc):
    with AuditLog(path, fsync="never", signing_key=signing, encryption=Encryption(master, **enc)) as log:
        return [log.append(r).result(5) for r in recs]


def raw_bytes(directory) -> bytes:
    """Every byte of every file in ``directory`` (trail, heads log, key store, journals)."""
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


def opened(path, master):
    store = KeyStore(keystore_path_for(path), load_master_key(master), create=False)
    try:
        sealer = Sealer(store)
        return [sealer.open(r) for r in records(path)]
    finally:
        store.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".db"])
def test_content_is_sealed_readable_with_the_key_and_the_trail_verifies(tmp_path, keys, suffix):
    signing, public, master = keys
    path = tmp_path / f"t{suffix}"
    recs = [personal(i, u) for i, u in enumerate(["alice", "bob", "alice"])]
    write(path, recs, signing, master)
    data = raw_bytes(tmp_path)
    for word in (*SECRET_WORDS, "alice", "bob"):
        assert word.encode() not in data  # nothing personal in clear anywhere, not even the user name
    stored = list(records(path))
    assert all(r["prompt"] is None and r["user"] is None and "end_user" not in r["metadata"] for r in stored)
    assert stored[0]["metadata"] == {"key_id": "k1"} and stored[0]["tenant"] == "acme"
    assert stored[0]["sealed"]["key_ref"] == stored[2]["sealed"]["key_ref"] != stored[1]["sealed"]["key_ref"]
    for (body, state), rec in zip(opened(path, master), recs, strict=True):
        assert state == "readable"
        assert body["prompt"] == rec.prompt.model_dump(mode="json") and body["user"] == rec.user
        assert body["metadata"]["end_user"] == rec.user
        assert AuditRecord.model_validate({k: v for k, v in body.items() if k not in ("seq", "prev_hash", "hash")})
    assert verify(path, public_key=public).ok


@pytest.mark.parametrize("suffix", [".jsonl", ".db"])
def test_erased_subject_is_unrecoverable_from_the_files_while_verify_passes(tmp_path, keys, suffix):
    signing, public, master = keys
    path = tmp_path / f"t{suffix}"
    write(path, [personal(i, u) for i, u in enumerate(["alice", "bob", "alice", "carol"])], signing, master)
    store = KeyStore(keystore_path_for(path), load_master_key(master))
    ref = next(r["sealed"]["key_ref"] for r in records(path) if r["request_id"] == "r0")
    alice_key = store.key(ref)
    assert alice_key is not None
    wrapped = store._db.execute("SELECT wrapped FROM subject_keys WHERE key_ref=?", (ref,)).fetchone()[0]
    assert wrapped in raw_bytes(tmp_path)
    assert store.erase_subject("alice") == 1
    store.close()
    data = raw_bytes(tmp_path)
    for form in (alice_key, alice_key.hex().encode(), base64.b64encode(alice_key), wrapped, *(w.encode() for w in
                                                                                              SECRET_WORDS)):
        assert form not in data  # neither the key nor its wrapped copy nor the text survives in any file
    states = {body["request_id"]: (state, body["user"]) for body, state in opened(path, master)}
    assert states == {"r0": ("erased", None), "r1": ("readable", "bob"), "r2": ("erased", None),
                      "r3": ("readable", "carol")}
    result = verify(path, public_key=public)
    assert result.ok and result.records == 4 and result.signed_size == 4, result.reason


def test_erase_in_process_and_from_another_process_while_the_log_runs(tmp_path, keys):
    signing, public, master = keys
    path = tmp_path / "t.jsonl"
    log = AuditLog(path, fsync="never", signing_key=signing, encryption=Encryption(master))
    log.append(personal(0, "alice")).result(5)
    log.append(personal(1, "bob")).result(5)
    assert log.erase_subject("alice") == 1
    other = KeyStore(keystore_path_for(path), load_master_key(master))  # e.g. `audit erase` meanwhile
    assert other.erase_subject("bob") == 1
    other.close()
    log.append(personal(2, "alice")).result(5)  # new requests of an erased subject: a new key
    log.append(personal(3, "bob")).result(5)  # the writer noticed the other process's erasure
    log.close()
    states = [(body["request_id"], state) for body, state in opened(path, master)]
    assert states == [("r0", "erased"), ("r1", "erased"), ("r2", "readable"), ("r3", "readable")]
    assert verify(path, public_key=public).ok


def test_retention_expires_old_days_on_open_and_on_demand(tmp_path, keys):
    signing, public, master = keys
    path = tmp_path / "t.db"
    write(path, [personal(0, "alice", days_ago=40), personal(1, "bob", days_ago=10), personal(2, "alice")],
          signing, master)
    assert [s for _, s in opened(path, master)] == ["readable"] * 3
    write(path, [personal(3, "carol")], signing, master, retention_days=30)  # applied when the log opens
    assert [s for _, s in opened(path, master)] == ["erased", "readable", "readable", "readable"]
    with AuditLog(path, signing_key=signing, encryption=Encryption(master)) as log:
        assert log.expire(5) == 1  # bob's day, 10 days ago
    assert [s for _, s in opened(path, master)] == ["erased", "erased", "readable", "readable"]
    assert verify(path, public_key=public).ok


def test_hashed_policy_digests_are_sealed_too(tmp_path, keys):
    signing, _, master = keys
    path = tmp_path / "t.jsonl"
    rec = personal(0, "alice", full=False)
    write(path, [rec], signing, master)
    stored = json.loads(path.read_text())
    assert rec.prompt.sha256 not in path.read_text() and stored["prompt"] is None  # no guessable digest left


def test_encryption_key_problems_are_clear_errors_at_open(tmp_path, keys, monkeypatch):
    signing, _, master = keys
    path = tmp_path / "t.jsonl"
    with pytest.raises(AuditKeyError, match="master key: file .*nope does not exist"):
        AuditLog(path, encryption=Encryption(tmp_path / "nope"))
    with pytest.raises(AuditKeyError, match="environment variable BASTION_TEST_MASTER is not set"):
        AuditLog(path, encryption=Encryption("env:BASTION_TEST_MASTER"))
    (tmp_path / "short.key").write_bytes(b"too short")
    with pytest.raises(AuditKeyError, match="not 32 raw bytes"):
        AuditLog(path, encryption=Encryption(tmp_path / "short.key"))
    write(path, [personal(0, "alice")], signing, master)
    other = tmp_path / "other.key"
    other.write_bytes(bytes(range(32)))
    with pytest.raises(AuditKeyError, match="does not open key store .*wrong master key"):
        AuditLog(path, signing_key=signing, encryption=Encryption(other))
    with pytest.raises(AuditKeyError, match="is encrypted .* written in clear"):
        AuditLog(path, signing_key=signing)
    monkeypatch.setenv("BASTION_TEST_MASTER", master.read_text().strip())
    write(path, [personal(1, "bob")], signing, "env:BASTION_TEST_MASTER")
    assert [s for _, s in opened(path, master)] == ["readable", "readable"]
    with AuditLog(tmp_path / "plain.jsonl") as log, pytest.raises(AuditError, match="not encrypted"):
        log.erase_subject("alice")
    with pytest.raises(ValueError, match="retention_days"):
        Encryption(master, retention_days=-1)


def test_tampered_ciphertext_is_reported_not_silently_read(tmp_path, keys):
    signing, _, master = keys
    path = tmp_path / "t.jsonl"
    write(path, [personal(0, "alice")], signing, master)
    body = json.loads(path.read_text())
    store = KeyStore(keystore_path_for(path), load_master_key(master))
    ct = base64.b64decode(body["sealed"]["ciphertext"])
    body["sealed"]["ciphertext"] = base64.b64encode(bytes([ct[0] ^ 1]) + ct[1:]).decode()
    with pytest.raises(ValueError, match="fails its integrity check"):
        Sealer(store).open(body)
    body = json.loads(path.read_text())
    body["record_id"] = "moved-to-another-record"
    with pytest.raises(ValueError, match="fails its integrity check"):
        Sealer(store).open(body)
    store.close()
