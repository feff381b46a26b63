"""``python -m bastion audit ...``: verify a trail, or print / write the audit record JSON schema.

``bastion.__main__`` registers ``add_audit_parser`` and dispatches to ``run_audit``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def audit_record_schema() -> dict:
    """The JSON schema of ``AuditRecord`` as published in docs/audit_record.schema.json."""
    from bastion.audit.record import AuditRecord

    schema = AuditRecord.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://bastion.dev/schemas/audit_record.schema.json"
    return schema


def add_audit_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``audit`` command (``verify PATH`` and ``schema [--write PATH]``)."""
    audit = subparsers.add_parser("audit", help="verify an audit trail or print the record schema")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    ver = sub.add_parser("verify", help="walk the hash chain; exit 0 when intact, 1 otherwise")
    ver.add_argument("path", help="audit trail (.jsonl, .db or .sqlite)")
    ver.add_argument("--json", action="store_true", help="print the result as JSON")
    ver.add_argument("--checkpoint", default=None, metavar="SEQ:HASH",
                     help="an acknowledged record kept elsewhere (AuditAck.checkpoint): also catches truncation")
    sch = sub.add_parser("schema", help="print the AuditRecord JSON schema")
    sch.add_argument("--write", default=None, metavar="PATH",
                     help="write it to PATH instead (the repository publishes docs/audit_record.schema.json)")
    return audit


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
    from bastion.audit.verify import parse_checkpoint, verify

    try:
        checkpoint = parse_checkpoint(args.checkpoint) if args.checkpoint else None
        result = verify(args.path, checkpoint)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"ERROR: {e}")
        return 1
    if args.json:
        print(json.dumps(result.__dict__))
    else:
        print(result)
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m bastion.cli_audit verify PATH``)."""
    parser = argparse.ArgumentParser(prog="bastion")
    add_audit_parser(parser.add_subparsers(dest="command", required=True))
    return run_audit(parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    raise SystemExit(main())
