"""Durable job states in one SQLite file: what ``bastion.engine.jobs.JobManager`` keeps.

One row a job: its id, its tenant and idempotency key (unique together, indexed), when it was
created (indexed: listings are newest first) and its whole state as JSON. WAL with
synchronous=FULL: a committed state survives a kill -9 of the process and a crash of the machine.
Several processes may open one file (SQLite locks it); a ``JobStore`` itself is thread-safe.
"""

from __future__ import annotations

import builtins
import enum
import json
import sqlite3
import threading
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

JobStatus = Literal["queued", "running", "finished", "failed", "aborted"]
FINAL_STATUSES: Final = frozenset({"finished", "failed", "aborted"})


class AnyTenant(enum.Enum):
    """The type of ``ANY_TENANT``, the tenant argument that filters nothing (``None`` is "no tenant")."""

    ANY = "any"


ANY_TENANT: Final = AnyTenant.ANY


@dataclass
class JobState:
    """A job: status, output so far, why it ended, and what it can be re-run from."""

    job_id: str
    status: JobStatus
    text: str = ""
    token_ids: list[int] | None = None
    finish_reason: str | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    tenant: str | None = None
    idempotency_key: str | None = None
    request: dict[str, Any] | None = None  # JSON the job can be re-run from after a restart
    result: dict[str, Any] | None = None  # JSON result (the server keeps the OpenAI response body here)
    output_tokens: int = 0  # progress
    attempts: int = 0  # runs started: 1, plus 1 per resume after a restart
    notified_at: float | None = None  # when the job's end was reported to its ``request["webhook_url"]``

    @property
    def done(self) -> bool:
        """True once the job can change no more (finished, failed or aborted)."""
        return self.status in FINAL_STATUSES


def _scope(tenant: str | None) -> str:
    # JSON keeps None ("null") and "" ('""') apart in a NOT NULL column a unique index can cover
    # (SQLite's unique indexes treat NULLs as all different)
    return json.dumps(tenant)


def _load(state: str) -> JobState:
    return JobState(**json.loads(state))


_CREATE = (
    "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, tenant_scope TEXT NOT NULL, "
    "idempotency_key TEXT, created_at REAL NOT NULL, state TEXT NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (tenant_scope, idempotency_key) "
    "WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS jobs_tenant_created ON jobs (tenant_scope, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at)",
)
_UPSERT = (
    "INSERT INTO jobs (job_id, tenant_scope, idempotency_key, created_at, state) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (job_id) DO UPDATE SET tenant_scope = excluded.tenant_scope, "
    "idempotency_key = excluded.idempotency_key, created_at = excluded.created_at, state = excluded.state"
)


class JobStore:
    """Job states in one SQLite file (WAL, synchronous=FULL), or in memory with ``path=":memory:"``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            with self._db:  # commits the transaction, or rolls it back on an exception
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
                old = []
                if columns and "tenant_scope" not in columns:  # the first layout: (job_id, state, updated_at)
                    old = [_load(row[0]) for row in self._db.execute("SELECT state FROM jobs")]
                    self._db.execute("DROP TABLE jobs")
                for statement in _CREATE:
                    self._db.execute(statement)
                for job in old:
                    self._db.execute(_UPSERT, self._row(job))

    @staticmethod
    def _row(job: JobState) -> tuple[str, str, str | None, float, str]:
        return (job.job_id, _scope(job.tenant), job.idempotency_key, job.created_at, json.dumps(asdict(job)))

    def save(self, job: JobState) -> None:
        """Insert or update the job's state, committed (durable) on return.

        Raises ``sqlite3.IntegrityError`` when another job has the same tenant and idempotency key,
        and ``TypeError`` when ``request`` or ``result`` is not JSON.
        """
        row = self._row(job)
        with self._lock:
            self._db.execute(_UPSERT, row)

    def get(self, job_id: str) -> JobState | None:
        """The job with this id, or None."""
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _load(row[0])

    def find(self, tenant: str | None, idempotency_key: str) -> JobState | None:
        """The job this tenant submitted with this idempotency key, or None."""
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE tenant_scope = ? AND idempotency_key = ?",
                                   (_scope(tenant), idempotency_key)).fetchone()
        return None if row is None else _load(row[0])

    def list(self, tenant: str | None | AnyTenant = ANY_TENANT, limit: int = 100) -> builtins.list[JobState]:
        """Up to ``limit`` jobs, newest first: the tenant's, or everyone's with ``ANY_TENANT``."""
        where, args = ("", ()) if isinstance(tenant, AnyTenant) else ("WHERE tenant_scope = ?", (_scope(tenant),))
        with self._lock:
            rows = self._db.execute(f"SELECT state FROM jobs {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                    (*args, limit)).fetchall()
        return [_load(row[0]) for row in rows]

    def unnotified(self, limit: int = 1000) -> builtins.list[JobState]:
        """Ended jobs whose request names a ``webhook_url`` not yet told of the end, oldest first (a
        restarted server delivers what a crash left undelivered: webhooks are at least once)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state FROM jobs WHERE json_extract(state, '$.status') IN ('finished', 'failed', 'aborted') "
                "AND json_extract(state, '$.notified_at') IS NULL "
                "AND json_extract(state, '$.request.webhook_url') IS NOT NULL ORDER BY created_at, rowid LIMIT ?",
                (limit,)).fetchall()
        return [_load(row[0]) for row in rows]

    def load_all(self) -> builtins.list[JobState]:
        """Every stored job, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT state FROM jobs ORDER BY created_at, rowid").fetchall()
        return [_load(row[0]) for row in rows]

    def close(self) -> None:
        """Close the database (every saved state is already committed)."""
        with self._lock:
            self._db.close()
