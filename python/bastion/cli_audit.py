"""``python -m bastion audit ...``: verify, prove, check proofs, read, erase and expire a trail; keys; schema.

``bastion.__main__`` registers ``add_audit_parser`` and dispatches to ``run_audit``. Key arguments
name a file (PEM, raw, hex or base64) or ``env:NAME``; the master key defaults to
``env:BASTION_AUDIT_MASTER_KEY`` when that variable is set. Exit codes: 0 ok, 1 failed check or error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

MASTER_KEY_ENV = "BASTION_AUDIT_MASTER_KEY"


def audit_record_schema() -> dict:
    """The JSON schema of ``AuditRecord`` as published in docs/audit_record.schema.json."""
    from bastion.audit.record import AuditRecord

    schema = AuditRecord.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://bastion.dev/schemas/audit_record.schema.json"
    return schema


def _add_master(p: argparse.ArgumentParser, required: bool) -> None:
    default = f"env:{MASTER_KEY_ENV}" if os.environ.get(MASTER_KEY_ENV) else None
    p.add_argument("--master-key", default=default, required=required and default is None, metavar="KEY",
                   help=f"32-byte master key: file or env:NAME (default: env:{MASTER_KEY_ENV} when set)")
    p.add_argument("--keystore", default=None, metavar="PATH", help="subject key store (default: PATH.keys)")


def add_audit_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``audit`` command and its subcommands."""
    audit = subparsers.add_parser("audit", help="verify, prove, read, erase an audit trail; keys; record schema")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    ver = sub.add_parser("verify", help="check the chain (and signed heads); exit 0 when intact, 1 otherwise")
    ver.add_argument("path", help="audit trail (.jsonl, .db or .sqlite)")
    ver.add_argument("--json", action="store_true", help="print the result as JSON")
    ver.add_argument("--checkpoint", default=None, metavar="SEQ:HASH",
                     help="an acknowledged record kept elsewhere (AuditAck.checkpoint): also catches truncation")
    ver.add_argument("--public-key", default=None, metavar="KEY",
                     help="the signer's Ed25519 public key (PEM/raw file or env:NAME): check every signed tree head")
    ver.add_argument("--heads", default=None, metavar="PATH", help="the heads log (default: PATH.heads)")
    prv = sub.add_parser("prove", help="print the inclusion proof (JSON) of one record against a signed head")
    prv.add_argument("path")
    prv.add_argument("seq", type=int)
    prv.add_argument("--tree-size", type=int, default=None, help="prove against the head of this size "
                                                                  "(default: the latest covering the record)")
    prv.add_argument("--out", default=None, metavar="FILE", help="write the proof to FILE")
    con = sub.add_parser("consistency", help="print the consistency proof (JSON) between two signed heads")
    con.add_argument("path")
    con.add_argument("old_size", type=int)
    con.add_argument("new_size", type=int, nargs="?", default=None, help="default: the latest head")
    con.add_argument("--out", default=None, metavar="FILE")
    chk = sub.add_parser("check-proof", help="check a proof with the public key alone; exit 0 when it holds")
    chk.add_argument("proof", help="proof JSON file (from prove or consistency; - for stdin)")
    chk.add_argument("--public-key", required=True, metavar="KEY")
    leaf = chk.add_mutually_exclusive_group()
    leaf.add_argument("--record", default=None, metavar="FILE", help="the record as stored (JSON) to check")
    leaf.add_argument("--leaf-hash", default=None, metavar="HEX", help="the record's leaf hash to check")
    show = sub.add_parser("show", help="print records (JSON lines), decrypting the content that can still be read")
    show.add_argument("path")
    show.add_argument("--seq", type=int, default=None, help="only this record")
    _add_master(show, required=False)
    era = sub.add_parser("erase", help="destroy a subject's content keys: unreadable, the trail still verifies")
    era.add_argument("path")
    era.add_argument("--subject", required=True, help="the end user (or user) whose content is erased")
    _add_master(era, required=True)
    exp = sub.add_parser("expire", help="destroy the content keys of days older than the retention period")
    exp.add_argument("path")
    exp.add_argument("--retention-days", type=int, required=True)
    _add_master(exp, required=True)
    gen = sub.add_parser("keygen", help="write a new Ed25519 signing key (PEM, and .pub) or master key, mode 0600")
    gen.add_argument("out", help="file to create (refuses to overwrite)")
    gen.add_argument("--master", action="store_true", help="a 32-byte master key (base64) instead")
    sch = sub.add_parser("schema", help="print the AuditRecord JSON schema")
    sch.add_argument("--write", default=None, metavar="PATH",
                     help="write it to PATH instead (the repository publishes docs/audit_record.schema.json)")
    return audit


def _emit(doc: dict[str, Any], out: str | None) -> None:
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if out:
        Path(out).write_text(text)
        print(f"wrote {out}")
    else:
        print(text, end="")


def _verify(args: argparse.Namespace) -> int:
    from bastion.audit.verify import parse_checkpoint, verify

    checkpoint = parse_checkpoint(args.checkpoint) if args.checkpoint else None
    result = verify(args.path, checkpoint, public_key=args.public_key, heads_path=args.heads)
    print(json.dumps(result.__dict__) if args.json else result)
    return 0 if result.ok else 1


def _check_proof(args: argparse.Namespace) -> int:
    from bastion.audit.keys import load_verify_key
    from bastion.audit.proofs import check_proof

    text = sys.stdin.read() if args.proof == "-" else Path(args.proof).read_text()
    record = json.loads(Path(args.record).read_text()) if args.record else None
    leaf = bytes.fromhex(args.leaf_hash) if args.leaf_hash else None
    result = check_proof(json.loads(text), load_verify_key(args.public_key), record=record, leaf_hash=leaf)
    print(result)
    return 0 if result.ok else 1


def _keystore(args: argparse.Namespace) -> Any:
    from bastion.audit.keys import load_master_key
    from bastion.audit.keystore import KeyStore, keystore_path_for

    path = args.keystore or keystore_path_for(args.path)
    return KeyStore(path, load_master_key(args.master_key), create=False)


def _show(args: argparse.Namespace) -> int:
    from bastion.audit.sealing import Sealer
    from bastion.audit.trail import find_record, records

    sealer = Sealer(_keystore(args)) if args.master_key else None
    try:
        chosen = [find_record(args.path, args.seq)] if args.seq is not None else records(args.path)
        for body in chosen:
            state: str
            if sealer is not None:
                body, state = sealer.open(body)
            else:
                state = "sealed" if isinstance(body.get("sealed"), dict) else "clear"
            print(json.dumps(body | {"content": state}, sort_keys=True))
    finally:
        if sealer is not None:
            sealer.store.close()
    return 0


def _erase(args: argparse.Namespace) -> int:
    store = _keystore(args)
    try:
        if args.audit_command == "erase":
            n = store.erase_subject(args.subject)
            print(f"erased subject {args.subject!r}: {n} content key(s) destroyed; their records stay in the trail, "
                  "unreadable, and it still verifies")
        else:
            n = store.expire(args.retention_days)
            print(f"expired {n} content key(s) of days before the last {args.retention_days}; those records are "
                  "now unreadable, and the trail still verifies")
    finally:
        store.close()
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from bastion.audit.keys import MasterKey, SigningKey, write_private

    out = Path(args.out)
    if args.master:
        write_private(out, MasterKey.generate().export_base64().encode() + b"\n")
        print(f"wrote master key {out} (mode 0600)")
        return 0
    key = SigningKey.generate()
    write_private(out, key.private_pem())
    pub = out.with_name(out.name + ".pub")
    pub.write_bytes(key.verify_key.pem())
    print(f"wrote signing key {out} (mode 0600) and public key {pub}; key id {key.key_id}")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    """Run the parsed ``audit`` command; returns the process exit code."""
    if args.audit_command == "schema":
        text = json.dumps(audit_record_schema(), indent=2, sort_keys=True) + "\n"
        if args.write:
            Path(args.write).write_text(text)
            print(f"wrote {args.write}")
        else:
            print(text, end="")
        return 0
    from bastion.audit.proofs import consistency_proof, inclusion_proof
    from bastion.audit.sinks import AuditError

    try:
        if args.audit_command == "verify":
            return _verify(args)
        if args.audit_command == "prove":
            _emit(inclusion_proof(args.path, args.seq, args.tree_size), args.out)
            return 0
        if args.audit_command == "consistency":
            _emit(consistency_proof(args.path, args.old_size, args.new_size), args.out)
            return 0
        if args.audit_command == "check-proof":
            return _check_proof(args)
        if args.audit_command == "show":
            return _show(args)
        if args.audit_command in ("erase", "expire"):
            return _erase(args)
        return _keygen(args)
    except (AuditError, LookupError, ValueError, OSError) as e:
        print(f"ERROR: {e}")
        return 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m bastion.cli_audit verify PATH``)."""
    parser = argparse.ArgumentParser(prog="bastion")
    add_audit_parser(parser.add_subparsers(dest="command", required=True))
    return run_audit(parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    raise SystemExit(main())
