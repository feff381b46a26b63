"""AuditRecord content policy, redaction and the published JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from bastion.audit import AuditRecord, ContentPolicy
from bastion.audit.redact import luhn_valid, redact
from bastion.cli_audit import audit_record_schema
from hypothesis import given
from hypothesis import strategies as st

from .audit_helpers import make_record

SECRETS = [
    ("card 4111 1111 1111 1111 exp 12/29", "4111", "card"),
    ("key AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE", "aws_key"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abc", "github_token"),
    ("use sk-proj-abcdefghijklmnopqrstuvwx now", "sk-proj", "api_key"),
    ("password = hunter2hunter2", "hunter2", "secret_assignment"),
    ("mail bob@example.com", "bob@example.com", "email"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----", "MIIEabc", "private_key"),
]


@pytest.mark.parametrize("text,secret,label", SECRETS)
def test_hashed_policy_never_keeps_secrets(text, secret, label):
    captured = ContentPolicy().capture(text)
    assert captured.text is None
    assert secret not in captured.redacted
    assert f"[REDACTED:{label}]" in captured.redacted
    assert len(captured.sha256) == 64


def test_non_luhn_digit_runs_are_kept():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert redact("order 4111111111111112") == "order 4111111111111112"


def test_full_policy_keeps_text_and_hmac_changes_digest():
    full = ContentPolicy(mode="full").capture("hello")
    keyed = ContentPolicy(hash_key=b"k").capture("hello")
    assert full.text == "hello" and full.redacted is None
    assert keyed.sha256 != full.sha256


@given(st.text())
def test_redact_is_total_on_any_unicode(text):
    out = redact(text)
    assert isinstance(out, str)
    assert redact(out) == out  # idempotent: a redaction marker is never redacted again


def test_record_rejects_unknown_outcome_and_fields():
    with pytest.raises(ValueError, match="outcome"):
        AuditRecord(request_id="r", outcome="great")
    with pytest.raises(ValueError, match="colour"):
        AuditRecord(request_id="r", outcome="served", colour="blue")


# the published copy lives in the repository, not in the installed package
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "audit_record.schema.json"


def test_published_schema_is_current_and_validates_records():
    published = json.loads(Path(SCHEMA_PATH).read_text())
    assert published == audit_record_schema(), "run: python -m bastion audit schema --write docs/audit_record.schema.json"
    jsonschema.validate(make_record(3).body(), published)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"request_id": "r", "outcome": "nope"}, published)


def test_cli_schema_writes_the_published_schema(tmp_path, capsys):
    import argparse

    from bastion.cli_audit import add_audit_parser, run_audit

    parser = argparse.ArgumentParser()
    add_audit_parser(parser.add_subparsers(dest="command"))
    target = tmp_path / "schema.json"
    assert run_audit(parser.parse_args(["audit", "schema", "--write", str(target)])) == 0
    assert json.loads(target.read_text()) == audit_record_schema()
    assert run_audit(parser.parse_args(["audit", "verify", str(tmp_path / "missing.jsonl")])) == 1
    assert "does not exist" in capsys.readouterr().out
