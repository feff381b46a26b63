"""The audit commands end to end, as separate processes: keygen, verify, prove, check-proof, consistency,
show, erase, expire; exit codes and what they print."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bastion.audit import AuditLog, Encryption

from .test_erasure import SECRET_WORDS, personal
from .test_signed import rewrite, stored


def audit(*args, env=None, module="bastion.cli_audit"):
    """Run ``python -m <module> [audit] ARGS``; (exit code, stdout + stderr)."""
    cmd = [sys.executable, "-m", module, *(["audit"] if module == "bastion" else []), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr


def test_sign_verify_prove_erase_end_to_end(tmp_path):
    signing, master = tmp_path / "audit-signing.pem", tmp_path / "audit-master.key"
    code, out = audit("keygen", signing)
    assert code == 0 and "key id" in out and oct(signing.stat().st_mode & 0o777) == "0o600"
    public = tmp_path / "audit-signing.pem.pub"
    assert b"PUBLIC KEY" in public.read_bytes()
    assert audit("keygen", "--master", master)[0] == 0
    assert audit("keygen", master)[0] == 1  # never overwrites a key

    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key=signing, encryption=Encryption(master)) as log:
        for i, user in enumerate(["alice", "bob", "alice", "bob", "carol"]):
            log.append(personal(i, user)).result(5)
            if i == 2:
                log.checkpoint(5)

    code, out = audit("verify", path, "--public-key", public)
    assert code == 0 and "OK: 5 records" in out and "2 signed tree heads verified" in out
    code, out = audit("verify", path)
    assert code == 0 and "not checked" in out

    proof = tmp_path / "proof.json"
    code, out = audit("prove", path, 1, "--out", proof)
    assert code == 0, out
    code, out = audit("check-proof", proof, "--public-key", public)
    assert code == 0 and "is record seq 1 of the signed tree of 5 records" in out
    record = tmp_path / "record.json"
    record.write_text(json.dumps(stored(path)[1]))
    assert audit("check-proof", proof, "--public-key", public, "--record", record)[0] == 0
    record.write_text(json.dumps(stored(path)[1] | {"outcome": "failed"}))
    code, out = audit("check-proof", proof, "--public-key", public, "--record", record)
    assert code == 1 and "is NOT record seq 1" in out
    leaf = json.loads(proof.read_text())["leaf_hash"]
    assert audit("check-proof", proof, "--public-key", public, "--leaf-hash", leaf)[0] == 0
    code, out = audit("check-proof", proof, "--public-key", signing.with_name("other.pub"))
    assert code == 1 and "does not exist" in out

    code, out = audit("consistency", path, 3)
    assert code == 0 and json.loads(out)["type"] == "consistency"
    (tmp_path / "cons.json").write_text(out)
    code, out = audit("check-proof", tmp_path / "cons.json", "--public-key", public)
    assert code == 0 and "extends the signed tree of 3 records" in out

    code, out = audit("show", path, "--seq", 0, "--master-key", master)
    assert code == 0 and json.loads(out)["content"] == "readable" and SECRET_WORDS[0] in out
    code, out = audit("erase", path, "--subject", "alice", env={"BASTION_AUDIT_MASTER_KEY": master.read_text()})
    assert code == 0 and "1 content key(s) destroyed" in out  # one key: alice, today
    code, out = audit("show", path, "--master-key", master)
    shown = [json.loads(x) for x in out.splitlines()]
    assert [r["content"] for r in shown] == ["erased", "readable", "erased", "readable", "readable"]
    assert [r["user"] for r in shown] == [None, "bob", None, "bob", "carol"]
    for p in tmp_path.iterdir():
        if p.name.startswith("audit.jsonl"):
            assert b"alice asks" not in p.read_bytes()
    code, out = audit("verify", path, "--public-key", public, module="bastion")  # through python -m bastion
    assert code == 0 and "OK: 5 records" in out
    code, out = audit("expire", path, "--retention-days", 0, "--master-key", master)
    assert code == 0 and "expired 0 content key(s)" in out  # today's keys are within any retention period
    assert audit("check-proof", proof, "--public-key", public)[0] == 0  # proofs outlive erasure

    # an attacker rewrites the trail, recomputing every hash: verify names the record, exit 1
    bodies = stored(path)
    bodies[3]["outcome"] = "blocked"
    rewrite(path, bodies)
    code, out = audit("verify", path, "--public-key", public, "--json")
    result = json.loads(out)
    assert code == 1 and result["first_bad_seq"] == 3 and "changed after it was signed" in result["reason"]
    code, out = audit("prove", path, 3)
    assert code == 1 and "no longer matches" in out


def test_cli_errors_are_one_line_and_exit_1(tmp_path, keys):
    signing, public, master = keys
    path = tmp_path / "t.jsonl"
    code, out = audit("prove", path, 0)
    assert code == 1 and out.startswith("ERROR: no signed tree heads")
    path.write_text("")
    code, out = audit("verify", path, "--public-key", tmp_path / "nope.pub")
    assert code == 1 and "public key: file" in out and "does not exist" in out
    code, out = audit("erase", path, "--subject", "x", "--master-key", master)
    assert code == 1 and "key store" in out and "does not exist" in out
