"""The service's audit trail with signed tree heads and sealed content, set by ``bastion serve`` flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from .server_process import ServerProcess, headers


def keygen(path: Path, *extra: str) -> Path:
    subprocess.run([sys.executable, "-m", "bastion.cli_audit", "keygen", *extra, str(path)], check=True,
                   capture_output=True, timeout=60)
    return path


def test_signed_sealed_trail_verifies_with_the_public_key(tmp_path: Path) -> None:
    signing, master = keygen(tmp_path / "signing.pem"), keygen(tmp_path / "master.key", "--master")
    trail = tmp_path / "audit.jsonl"
    proc = ServerProcess(tmp_path, "--audit-path", str(trail), "--audit-signing-key", str(signing),
                         "--audit-master-key", str(master), "--audit-head-every", "2")
    try:
        proc.wait_ready()
        for i in range(3):
            body = {"prompt": f"Secret number {i} is", "max_tokens": 4, "temperature": 0, "user": f"end-user-{i}"}
            assert httpx.post(proc.url + "/v1/completions", json=body, headers=headers("alice"),
                              timeout=60).status_code == 200
    finally:
        assert proc.stop() in (0, -15)
    public = Path(f"{signing}.pub")
    verified = subprocess.run([sys.executable, "-m", "bastion.cli_audit", "verify", str(trail), "--public-key",
                               str(public)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    raw = trail.read_bytes()
    assert b"Secret number" not in raw and b"end-user-1" not in raw  # sealed, not in clear


def test_a_missing_audit_key_stops_the_command_before_it_binds(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bastion", "serve", "--port", "0", "--job-store", "none",
                           "--audit-path", str(tmp_path / "a.jsonl"), "--audit-signing-key",
                           str(tmp_path / "no-such.pem")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no-such.pem" in done.stderr, done.stderr[-2000:]
