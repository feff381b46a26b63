"""The key store of crypto-shredding: one AES-256 key per (subject, day), wrapped by the master key.

A SQLite file beside the trail (``PATH.keys`` by default). Each row holds a random 256-bit content
key wrapped with AES-GCM under a key derived from the master key; the row's reference, subject tag
and day are the wrap's associated data, so a row cannot be moved to another subject or day. The
subject itself is never stored: rows carry ``HMAC(master-derived key, subject)``, so the store names
nobody to whoever lacks the master key, and the trail carries only the random ``key_ref``.

Destroying a row makes every record sealed under it unreadable for good while the trail, its chain,
its Merkle tree and its signatures stay exactly as they were:

* ``erase_subject(subject)``: the subject's keys, every day (a data-protection erasure request);
* ``expire(retention_days)``: every subject's keys of the days older than the retention period.

``secure_delete`` overwrites freed pages and the rollback journal (not WAL) is deleted at each commit,
so a destroyed key does not linger in the files. A store opened with the wrong master key is refused
(a check value sealed at creation must open).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.audit.keys import AuditKeyError, MasterKey
from bastion.audit.sinks import AuditError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS subject_keys (
    key_ref TEXT PRIMARY KEY,
    subject_tag TEXT NOT NULL,
    period TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS subject_keys_by_subject ON subject_keys (subject_tag, period);
CREATE INDEX IF NOT EXISTS subject_keys_by_period ON subject_keys (period);
"""
_CHECK_PLAINTEXT = b"bastion-audit keystore v1"


def keystore_path_for(trail: str | os.PathLike[str]) -> Path:
    """The default key store of the trail at ``trail``: the same path plus ``.keys``."""
    return Path(os.fspath(trail) + ".keys")


def retention_cutoff(retention_days: int, now: datetime | None = None) -> str:
    """The first day (``YYYY-MM-DD``, UTC) still kept under ``retention_days``; older days expire."""
    if retention_days < 0:
        raise ValueError(f"retention_days must be >= 0, got {retention_days}")
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return (today - timedelta(days=retention_days)).isoformat()


class KeyStore:
    """Subject keys in a SQLite file; thread-safe; caches keys it has unwrapped."""

    def __init__(self, path: str | os.PathLike[str], master: MasterKey, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise AuditKeyError(f"audit key store {self.path} does not exist")
        self._wrap = AESGCM(master.derive(b"subject-key wrap"))
        self._tag_key = master.derive(b"subject tag")
        self._lock = threading.Lock()
        self._by_subject: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._by_ref: dict[str, bytes | None] = {}
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=DELETE")  # no WAL: a deleted key must not survive in a -wal file
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise AuditError(f"audit key store {self.path} cannot be opened ({e})") from None
        self._check_master(master)
        self._data_version = self._version()

    def _check_master(self, master: MasterKey) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'check'").fetchone()
        if row is None:
            nonce = secrets.token_bytes(12)
            self._db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", [
                ("check", nonce + self._wrap.encrypt(nonce, _CHECK_PLAINTEXT, b"check")),
                ("master_key_id", master.key_id.encode())])
            row = self._db.execute("SELECT value FROM meta WHERE name = 'check'").fetchone()
        try:
            ok = self._wrap.decrypt(row[0][:12], row[0][12:], b"check") == _CHECK_PLAINTEXT
        except InvalidTag:
            ok = False
        if not ok:
            made = self._db.execute("SELECT value FROM meta WHERE name = 'master_key_id'").fetchone()
            made_id = made[0].decode()[:16] if made else "?"
            self._db.close()
            raise AuditKeyError(f"audit master key (id {master.key_id[:16]}...) does not open key store {self.path} "
                                f"(made with key id {made_id}...): wrong master key")

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def subject_tag(self, subject: str) -> str:
        """The store's name for ``subject``: HMAC-SHA256 under a master-derived key (hex)."""
        return hmac.new(self._tag_key, subject.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    @staticmethod
    def _aad(key_ref: str, tag: str, period: str) -> bytes:
        return f"{key_ref}|{tag}|{period}".encode()

    def refresh(self) -> None:
        """Forget cached keys when another connection (``audit erase``/``expire``) changed the store."""
        with self._lock:
            version = self._version()
            if version != self._data_version:
                self._data_version = version
                self._by_subject.clear()
                self._by_ref.clear()

    def keys_for(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, bytes]]:
        """(subject, day) -> (key_ref, key) for each pair; missing keys are made and committed first."""
        with self._lock:
            out = {pair: self._by_subject[pair] for pair in wanted if pair in self._by_subject}
            missing = [pair for pair in wanted if pair not in out]
            if not missing:
                return out
            now = datetime.now(UTC).isoformat(timespec="seconds")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for subject, period in missing:
                    tag = self.subject_tag(subject)
                    row = self._db.execute("SELECT key_ref, wrapped FROM subject_keys WHERE subject_tag = ? AND "
                                           "period = ?", (tag, period)).fetchone()
                    if row is not None:
                        key = self._unwrap(row[0], tag, period, row[1])
                        ref = row[0]
                    else:
                        ref, key, nonce = secrets.token_hex(16), AESGCM.generate_key(256), secrets.token_bytes(12)
                        wrapped = nonce + self._wrap.encrypt(nonce, key, self._aad(ref, tag, period))
                        self._db.execute("INSERT INTO subject_keys VALUES (?, ?, ?, ?, ?)",
                                         (ref, tag, period, wrapped, now))
                    out[(subject, period)] = self._by_subject[(subject, period)] = (ref, key)
                    self._by_ref[ref] = key
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._data_version = self._version()
            return out

    def _unwrap(self, key_ref: str, tag: str, period: str, wrapped: bytes) -> bytes:
        try:
            return self._wrap.decrypt(wrapped[:12], wrapped[12:], self._aad(key_ref, tag, period))
        except InvalidTag:
            raise AuditError(f"audit key store {self.path}: key {key_ref} fails its integrity check") from None

    def key(self, key_ref: str) -> bytes | None:
        """The content key ``key_ref``, or None when it was destroyed (erased or expired)."""
        with self._lock:
            if key_ref in self._by_ref:
                return self._by_ref[key_ref]
            row = self._db.execute("SELECT subject_tag, period, wrapped FROM subject_keys WHERE key_ref = ?",
                                   (key_ref,)).fetchone()
            key = None if row is None else self._unwrap(key_ref, row[0], row[1], row[2])
            self._by_ref[key_ref] = key
            return key

    def _destroy(self, where: str, args: tuple[str, ...]) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                refs = [r for (r,) in self._db.execute(f"SELECT key_ref FROM subject_keys WHERE {where}", args)]
                self._db.execute(f"DELETE FROM subject_keys WHERE {where}", args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._by_subject = {k: v for k, v in self._by_subject.items() if v[0] not in refs}
            for ref in refs:
                self._by_ref[ref] = None
            self._data_version = self._version()
            return len(refs)

    def erase_subject(self, subject: str) -> int:
        """Destroy every key of ``subject``; returns how many keys (days) were destroyed."""
        return self._destroy("subject_tag = ?", (self.subject_tag(subject),))

    def expire(self, retention_days: int, now: datetime | None = None) -> int:
        """Destroy every key of the days before the retention period; returns how many."""
        return self._destroy("period < ?", (retention_cutoff(retention_days, now),))

    def count(self) -> int:
        """How many content keys the store holds."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM subject_keys").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r})"
