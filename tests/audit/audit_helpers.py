"""Builders shared by the audit tests."""

from __future__ import annotations

from pathlib import Path

from bastion.audit import AuditLog, AuditRecord, ContentPolicy


def make_record(i: int, outcome: str = "served") -> AuditRecord:
    """A realistic record whose content differs with ``i``."""
    policy = ContentPolicy()
    return AuditRecord(
        request_id=f"req-{i}",
        user=f"user-{i % 3}",
        tenant="acme",
        outcome=outcome,
        prompt=policy.capture(f"prompt number {i}"),
        output=policy.capture(f"answer number {i}"),
        prompt_tokens=3 + i,
        output_tokens=2 * i,
        total_time_s=0.01 * i,
    )


def write_trail(path: Path, n: int, fsync: str = "never") -> list:
    """Write ``n`` records to ``path`` and return their acks."""
    with AuditLog(path, fsync=fsync) as log:
        futures = [log.append(make_record(i)) for i in range(n)]
        return [f.result(5) for f in futures]


def make_keys(directory: Path) -> tuple[Path, Path, Path]:
    """Write a signing key (PEM), its public key (PEM) and a master key (base64) under ``directory``."""
    from bastion.audit import MasterKey, SigningKey

    key = SigningKey.generate()
    signing, public, master = directory / "signing.pem", directory / "signing.pub", directory / "master.key"
    signing.write_bytes(key.private_pem())
    public.write_bytes(key.verify_key.pem())
    master.write_text(MasterKey.generate().export_base64() + "\n")
    return signing, public, master


def write_signed(path: Path, n: int, signing: Path, *, start: int = 0, **kwargs) -> list:
    """Append records ``start .. start+n-1`` to a signed trail (one head at close) and return their acks."""
    with AuditLog(path, fsync="never", signing_key=signing, **kwargs) as log:
        futures = [log.append(make_record(i)) for i in range(start, start + n)]
        return [f.result(5) for f in futures]
