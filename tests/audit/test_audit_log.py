"""AuditLog: chaining, durability acks, tail recovery, concurrency, both sinks."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest
from bastion.audit import AuditError, AuditLog, verify
from bastion.audit.chain import GENESIS_HASH, record_hash

from .audit_helpers import make_record, write_trail

SUFFIXES = [".jsonl", ".db", ".sqlite"]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_acks_carry_consecutive_seqs_and_chain_verifies(tmp_path, suffix, fsync):
    path = tmp_path / f"trail{suffix}"
    acks = write_trail(path, 20, fsync=fsync)
    assert [a.seq for a in acks] == list(range(20))
    assert len({a.hash for a in acks}) == 20
    result = verify(path)
    assert result.ok, result.reason
    assert result.records == 20
    assert result.last_hash == acks[-1].hash


def test_jsonl_lines_are_linked_canonical_records(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trail(path, 3)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["prev_hash"] == GENESIS_HASH
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    assert all(rec["hash"] == record_hash(rec) for rec in lines)
    # default content policy: digest + redacted copy, never the raw text field
    assert lines[0]["prompt"]["text"] is None and lines[0]["prompt"]["redacted"] == "prompt number 0"


@pytest.mark.parametrize("suffix", [".jsonl", ".db"])
def test_reopen_recovers_tail_and_continues_chain(tmp_path, suffix):
    path = tmp_path / f"trail{suffix}"
    first = write_trail(path, 5)
    second = write_trail(path, 4)
    assert [a.seq for a in second] == [5, 6, 7, 8]
    assert verify(path).ok
    assert verify(path).records == 9
    assert first[-1].hash != second[0].hash


def test_torn_final_line_is_dropped_on_reopen(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trail(path, 3)
    with open(path, "ab") as f:
        f.write(b'{"seq": 3, "half a rec')  # crash in the middle of a write
    acks = write_trail(path, 1)
    assert acks[0].seq == 3
    assert verify(path).ok


def test_concurrent_appenders_from_threads_keep_one_chain(tmp_path):
    path = tmp_path / "t.jsonl"
    log = AuditLog(path, fsync="batch", batch_interval_s=0.005)
    futures, lock = [], threading.Lock()

    def worker(base: int) -> None:
        for i in range(50):
            fut = log.append(make_record(base + i))
            with lock:
                futures.append(fut)

    threads = [threading.Thread(target=worker, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = sorted(f.result(5).seq for f in futures)
    log.close()
    assert seqs == list(range(200))
    assert verify(path).records == 200


def test_flush_makes_appended_records_readable(tmp_path):
    path = tmp_path / "t.jsonl"
    log = AuditLog(path, fsync="batch", batch_interval_s=30)  # would otherwise wait 30 s
    log.append(make_record(1))
    log.flush(timeout=5)
    assert len(path.read_text().splitlines()) == 1
    log.close()


def test_second_writer_on_same_jsonl_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    with AuditLog(path):
        with pytest.raises(AuditError, match="already open"):
            AuditLog(path)


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unsupported suffix '.txt'"):
        AuditLog(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="fsync must be"):
        AuditLog(tmp_path / "x.jsonl", fsync="sometimes")
    log = AuditLog(tmp_path / "y.jsonl")
    with pytest.raises(TypeError, match="expects an AuditRecord"):
        log.append({"outcome": "served"})
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(make_record(0))


def test_sqlite_trail_is_append_only(tmp_path):
    path = tmp_path / "t.db"
    write_trail(path, 2)
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE"):
        db.execute("UPDATE audit_records SET outcome='failed' WHERE seq=0")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE"):
        db.execute("DELETE FROM audit_records WHERE seq=1")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_write_failure_fails_the_ack_and_the_log(tmp_path):
    path = tmp_path / "t.jsonl"
    log = AuditLog(path, fsync="always")
    log._sink._file.close()  # simulate the disk going away under the writer
    fut = log.append(make_record(0))
    with pytest.raises(AuditError, match="audit write failed"):
        fut.result(5)
    with pytest.raises(AuditError, match="failed earlier"):
        log.append(make_record(1))
    log.close()
