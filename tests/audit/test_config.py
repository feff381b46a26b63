"""AuditConfig: the flat settings a service's flags map to, and the AuditLog they open."""

from __future__ import annotations

import pytest
from bastion.audit import AuditConfig, AuditKeyError, verify
from bastion.audit.keystore import keystore_path_for
from pydantic import ValidationError

from .test_erasure import opened, personal


def test_config_opens_a_signed_encrypted_log(tmp_path, keys, monkeypatch):
    signing, public, master = keys
    monkeypatch.setenv("AUDIT_MASTER", master.read_text().strip())
    path = tmp_path / "audit.db"
    config = AuditConfig(path=str(path), signing_key=str(signing), master_key="env:AUDIT_MASTER", head_every=2,
                         retention_days=30, fsync="batch")
    seen = []
    with config.open(witness=seen.append) as log:
        assert log.fsync == "batch" and log.key_id is not None
        for i in range(3):
            log.append(personal(i, "alice")).result(5)
    assert [h.tree_size for h in seen][-1] == 3
    assert keystore_path_for(path).exists()
    assert [s for _, s in opened(path, master)] == ["readable"] * 3
    assert verify(path, public_key=public).ok
    assert "env:AUDIT_MASTER" in repr(config)


def test_config_refuses_bad_values_and_bad_keys(tmp_path):
    with pytest.raises(ValidationError, match="head_every"):
        AuditConfig(path="a.jsonl", head_every=0)
    with pytest.raises(ValidationError, match="extra"):
        AuditConfig(path="a.jsonl", signing_keys="x")
    with pytest.raises(ValueError, match="need master_key"):
        AuditConfig(path=str(tmp_path / "a.jsonl"), retention_days=3).open()
    with pytest.raises(AuditKeyError, match="signing key: environment variable NOPE_KEY is not set"):
        AuditConfig(path=str(tmp_path / "a.jsonl"), signing_key="env:NOPE_KEY").open()
    plain = AuditConfig(path=str(tmp_path / "p.jsonl")).open()  # the default: a plain hash chain
    assert plain.key_id is None and plain.head is None and plain.checkpoint() is None
    plain.close()
