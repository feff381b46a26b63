"""No key ever shows: not in records, heads, logs, reprs, error messages or CLI output."""

from __future__ import annotations

import base64
import logging
import traceback

import pytest
from bastion.audit import AuditConfig, AuditKeyError, AuditLog, Encryption, MasterKey, SigningKey, verify
from bastion.audit.keys import load_master_key, load_signing_key
from bastion.audit.keystore import KeyStore, keystore_path_for
from bastion.cli_audit import main as cli
from cryptography.hazmat.primitives import serialization

from .test_erasure import personal


def forms(secret: bytes) -> list[str]:
    """The ways a key's bytes could leak into text."""
    return [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(), secret.decode("latin-1")]


def secrets_of(signing: SigningKey, master: MasterKey, subject_keys: list[bytes]) -> list[str]:
    raw = signing._private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
    pem_body = [line for line in signing.private_pem().decode().splitlines() if not line.startswith("-----")]
    derived = [master.derive(b"subject-key wrap"), master.derive(b"subject tag")]
    out = pem_body + forms(raw) + forms(master._raw)
    for k in derived + subject_keys:
        out += forms(k)
    return [s for s in out if len(s) >= 16]


def assert_clean(text: str, secrets: list[str], where: str) -> None:
    for s in secrets:
        assert s not in text, f"a key leaked into {where}"


def exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__context__)


def test_keys_never_appear_anywhere(tmp_path, keys, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    signing_file, public, master_file = keys
    monkeypatch.setenv("BASTION_TEST_MASTER", master_file.read_text().strip())
    signing, master = load_signing_key(signing_file), load_master_key(master_file)
    path = tmp_path / "t.jsonl"
    texts: dict[str, str] = {}

    def witness(head):
        raise RuntimeError("witness down")  # its failure is logged: the log must stay clean

    log = AuditLog(path, fsync="never", signing_key=signing_file, head_every=2, witness=witness,
                   encryption=Encryption("env:BASTION_TEST_MASTER", retention_days=30))
    for i, user in enumerate(["alice", "bob", "alice"]):
        log.append(personal(i, user)).result(5)
    log.checkpoint(5)
    texts["reprs"] = " ".join(repr(x) for x in (log, signing, signing.verify_key, master, str(signing), str(master),
                                                 log.head, Encryption(master._raw), Encryption(master),
                                                 AuditConfig(path=str(path), signing_key=str(signing_file),
                                                             master_key="env:BASTION_TEST_MASTER")))
    store = KeyStore(keystore_path_for(path), master)
    subject_keys = [k for (ref,) in store._db.execute("SELECT key_ref FROM subject_keys") if (k := store.key(ref))]
    texts["reprs"] += repr(store)
    store.close()
    assert len(subject_keys) == 2
    log.erase_subject("alice")
    log.close()

    # every error a wrong or broken key can cause, with the key material at hand
    other = tmp_path / "other.key"
    other.write_bytes(MasterKey.generate()._raw)
    monkeypatch.setenv("BASTION_TEST_BAD", signing_file.read_text()[:-40])  # a PEM cut short
    monkeypatch.setenv("BASTION_TEST_HEX", master._raw.hex()[:-1])  # one hex digit short
    attempts = [
        lambda: AuditLog(path, signing_key=signing_file, encryption=Encryption(other)),
        lambda: AuditLog(path, signing_key=SigningKey.generate(), encryption=Encryption(master)),
        lambda: AuditLog(path, signing_key="env:BASTION_TEST_BAD", encryption=Encryption(master)),
        lambda: AuditLog(path, signing_key=signing, encryption=Encryption("env:BASTION_TEST_HEX")),
        lambda: AuditLog(path, signing_key=signing),
        lambda: AuditLog(path, encryption=Encryption(master)),
    ]
    for i, attempt in enumerate(attempts):
        with pytest.raises(AuditKeyError) as info:
            attempt()
        texts[f"error {i}"] = exception_text(info.value)
    texts["cli"] = ""
    for argv in (["verify", str(path), "--public-key", str(public)],
                 ["show", str(path), "--master-key", str(master_file)],
                 ["show", str(path), "--master-key", str(other)],
                 ["erase", str(path), "--subject", "bob", "--master-key", "env:BASTION_TEST_HEX"],
                 ["verify", str(path), "--public-key", "env:BASTION_TEST_BAD"]):
        cli(argv)
        texts["cli"] += capsys.readouterr().out
    assert "wrong master key" in texts["cli"] and "OK: 3 records" in texts["cli"]
    assert verify(path, public_key=public).ok

    secrets = secrets_of(signing, master, subject_keys)
    texts["logs"] = caplog.text
    assert "witness hook failed" in caplog.text
    for name in (path, path.with_name(path.name + ".heads")):
        texts[name.name] = name.read_bytes().decode("latin-1")
    texts["keystore"] = keystore_path_for(path).read_bytes().decode("latin-1")
    for where, text in texts.items():
        assert_clean(text, secrets, where)
