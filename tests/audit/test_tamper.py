"""Tampering with one line of a JSONL trail or one row of a SQLite trail is detected and named."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from bastion.audit import verify
from bastion.audit.chain import canonical_json, record_hash

from .audit_helpers import write_trail


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "trail.jsonl"
    write_trail(path, 8)
    return path


def _lines(path):
    return path.read_text().splitlines()


def _rewrite(path, lines):
    path.write_text("\n".join(lines) + "\n")


def test_edited_line_is_named(jsonl):
    lines = _lines(jsonl)
    lines[3] = lines[3].replace('"outcome":"served"', '"outcome":"failed"')
    _rewrite(jsonl, lines)
    result = verify(jsonl)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert "line 4" in result.reason and "modified" in result.reason


def test_edit_with_recomputed_hash_breaks_the_next_link(jsonl):
    lines = _lines(jsonl)
    rec = json.loads(lines[2])
    rec["user"] = "mallory"
    rec["hash"] = record_hash(rec)
    lines[2] = canonical_json(rec)
    _rewrite(jsonl, lines)
    result = verify(jsonl)
    assert result.first_bad_seq == 3
    assert "does not link" in result.reason


def test_reordered_lines_are_named(jsonl):
    lines = _lines(jsonl)
    lines[4], lines[5] = lines[5], lines[4]
    _rewrite(jsonl, lines)
    result = verify(jsonl)
    assert result.first_bad_seq == 4
    assert "out of order" in result.reason


def test_deleted_line_is_named(jsonl):
    lines = _lines(jsonl)
    del lines[6]
    _rewrite(jsonl, lines)
    result = verify(jsonl)
    assert result.first_bad_seq == 6
    assert "missing" in result.reason and result.records == 6


def test_garbage_line_is_named(jsonl):
    lines = _lines(jsonl)
    lines[1] = "{not json"
    _rewrite(jsonl, lines)
    result = verify(jsonl)
    assert result.first_bad_seq == 1 and "not valid JSON" in result.reason


@pytest.fixture
def sqlite_trail(tmp_path):
    path = tmp_path / "trail.db"
    write_trail(path, 8)
    db = sqlite3.connect(path)
    # an attacker with file access can drop the append-only triggers; the chain still catches it
    db.execute("DROP TRIGGER audit_records_no_update")
    db.execute("DROP TRIGGER audit_records_no_delete")
    yield path, db
    db.close()


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "reason"),
    [
        ("UPDATE audit_records SET body=replace(body, 'acme', 'evil') WHERE seq=2", 2, "modified"),
        ("UPDATE audit_records SET outcome='blocked' WHERE seq=5", 5, "outcome"),
        ("DELETE FROM audit_records WHERE seq=4", 4, "missing"),
    ],
    ids=["edited row", "edited mirror column", "deleted row"],
)
def test_sqlite_tampered_row_is_named(sqlite_trail, tamper, bad_seq, reason):
    path, db = sqlite_trail
    assert db.execute(tamper).rowcount == 1
    db.commit()
    result = verify(path)
    assert result.first_bad_seq == bad_seq and reason in result.reason


def test_sqlite_reordered_rows_are_named(sqlite_trail):
    path, db = sqlite_trail
    rows = {s: r for s, *r in db.execute("SELECT seq, record_id, time, outcome, prev_hash, hash, body "
                                         "FROM audit_records WHERE seq IN (1, 2)")}
    db.execute("DELETE FROM audit_records WHERE seq IN (1, 2)")
    for new_seq, old_seq in ((1, 2), (2, 1)):  # same rowids, swapped contents
        db.execute("INSERT INTO audit_records (seq, record_id, time, outcome, prev_hash, hash, body) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (new_seq, *rows[old_seq]))
    db.commit()
    result = verify(path)
    assert result.first_bad_seq == 1
    assert "differ from the hashed body" in result.reason


def test_cli_verify_exit_codes(jsonl):
    cmd = [sys.executable, "-m", "bastion.cli_audit", "verify", str(jsonl)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "OK: 8 records" in ok.stdout
    lines = _lines(jsonl)
    del lines[2]
    _rewrite(jsonl, lines)
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "TAMPERED at seq 2" in bad.stdout


def test_truncated_tail_is_caught_with_a_checkpoint(tmp_path):
    path = tmp_path / "trail.jsonl"
    acks = write_trail(path, 8)
    _rewrite(path, _lines(path)[:5])  # the last three records cut off: a valid, shorter chain
    assert verify(path).ok  # the chain alone cannot see this
    result = verify(path, (acks[-1].seq, acks[-1].hash))
    assert not result.ok and result.first_bad_seq == 5
    assert "records seq 5..7 are missing" in result.reason
    cmd = [sys.executable, "-m", "bastion.cli_audit", "verify", str(path), "--checkpoint", acks[-1].checkpoint]
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "TAMPERED at seq 5" in bad.stdout


def test_rewritten_chain_is_caught_by_an_earlier_checkpoint(tmp_path):
    path = tmp_path / "trail.jsonl"
    acks = write_trail(path, 6)
    rewritten = tmp_path / "rewritten.jsonl"
    write_trail(rewritten, 6)  # a whole new, internally valid chain of the same length
    assert verify(rewritten).ok
    result = verify(rewritten, (acks[3].seq, acks[3].hash))
    assert not result.ok and result.first_bad_seq == 3 and "checkpoint hash" in result.reason
    assert verify(path, (acks[3].seq, acks[3].hash)).ok  # records appended after a checkpoint are fine


def test_malformed_checkpoint_is_a_clear_error():
    from bastion.audit.verify import parse_checkpoint

    with pytest.raises(ValueError, match="SEQ:HASH"):
        parse_checkpoint("12-abc")
