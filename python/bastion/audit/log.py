"""``AuditLog``: a hash-chained audit trail written by a background thread.

Durability policy (``fsync=``):

* ``"always"`` (default): a record is acknowledged only after an fsync (JSONL) or a
  ``synchronous=FULL`` commit (SQLite) that covers it. Records queued together share one fsync
  (group commit), so the cost is one fsync per burst, not per record.
* ``"batch"``: the writer fsyncs when ``batch_size`` records are waiting or ``batch_interval_s``
  has passed since the first of them; acknowledgements wait for that fsync.
* ``"never"``: acknowledged once handed to the OS; a machine crash may lose the newest records.

``append()`` never blocks on disk: it queues the record and returns a ``concurrent.futures.Future``
that resolves to an ``AuditAck`` (seq and hash) once the record is durable per the policy. The
Gateway awaits that future after the response has completed, never while tokens are streaming.
A record that was never acknowledged may be lost; a torn final JSONL line is dropped on reopen.

Signed trails (``signing_key=``): the sink keeps the Merkle tree over the records, and after the
records are durable the writer signs a tree head (``bastion.audit.heads``) every ``head_every``
records or ``head_interval_s`` seconds (whichever comes first), on ``checkpoint()`` and at close,
fsyncs it to ``PATH.heads`` and hands it to ``witness`` (a callable that ships it off the machine).

Encrypted trails (``encryption=``): each record's personal content is sealed under its subject's
key for its day before it is chained (``bastion.audit.sealing``); ``erase_subject`` and ``expire``
destroy keys. A trail that was signed or encrypted before refuses to open without its keys, and a
missing, unreadable or wrong key is an ``AuditKeyError`` here, before anything is written.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.config import Encryption
from bastion.audit.heads import SignedTreeHead, heads_path_for
from bastion.audit.keys import AuditKeyError, KeySource, SigningKey, load_master_key, load_signing_key
from bastion.audit.keystore import KeyStore, keystore_path_for
from bastion.audit.record import AuditRecord
from bastion.audit.sealing import Sealer
from bastion.audit.signer import HeadSigner
from bastion.audit.sinks import AuditError, AuditSink, FsyncPolicy, open_sink

log = logging.getLogger(__name__)
_STOP = object()
_MAX_GROUP = 512


@dataclass(frozen=True)
class AuditAck:
    """Proof that a record joined the chain durably: its position and its hash."""

    record_id: str
    seq: int
    hash: str

    @property
    def checkpoint(self) -> str:
        """"SEQ:HASH": keep it outside the trail; ``audit verify --checkpoint`` then also catches
        records cut off the end of the trail, which a hash chain alone cannot."""
        return f"{self.seq}:{self.hash}"


@dataclass
class _Pending:
    record: AuditRecord | None  # None = a flush barrier
    future: Future
    ack: AuditAck | None = None
    sign: bool = False  # a barrier that also signs a tree head (``checkpoint``)


class AuditLog:
    """Append-only, hash-chained audit trail at ``path`` (``.jsonl``, ``.db`` or ``.sqlite``).

    ``signing_key`` (an Ed25519 private key, or its file / ``env:NAME``): keep the Merkle tree and
    sign a tree head every ``head_every`` records or ``head_interval_s`` seconds and at close, each
    handed to ``witness``. ``encryption``: seal personal content under per-subject keys
    (``Encryption``). Without either it is the plain hash chain, as before.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fsync: FsyncPolicy = "always",
        *,
        batch_size: int = 64,
        batch_interval_s: float = 0.05,
        signing_key: SigningKey | Ed25519PrivateKey | KeySource | None = None,
        head_every: int = 1000,
        head_interval_s: float = 60.0,
        witness: Callable[[SignedTreeHead], object] | None = None,
        encryption: Encryption | None = None,
    ) -> None:
        if fsync not in ("always", "batch", "never"):
            raise ValueError(f"fsync must be 'always', 'batch' or 'never', got {fsync!r}")
        if batch_size < 1 or batch_interval_s <= 0:
            raise ValueError("batch_size must be >= 1 and batch_interval_s > 0")
        if head_every < 1 or head_interval_s <= 0:
            raise ValueError("head_every must be >= 1 and head_interval_s > 0")
        self.path = os.fspath(path)
        self.fsync: FsyncPolicy = fsync
        self._batch_size = batch_size
        self._batch_interval_s = batch_interval_s
        self._encryption = encryption
        self._signing = load_signing_key(signing_key) if signing_key is not None else None
        self._head_every, self._head_interval_s, self._witness = head_every, head_interval_s, witness
        self._signer: HeadSigner | None = None
        self._keystore: KeyStore | None = None
        self._sealer: Sealer | None = None
        self._expired_on: str | None = None
        self._refuse_downgrade()
        self._sink: AuditSink = open_sink(path, fsync)
        try:
            self._open_keys()
        except BaseException:
            self._release()
            raise
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"audit-writer:{self.path}", daemon=True)
        self._thread.start()

    def _refuse_downgrade(self) -> None:
        """A trail signed or encrypted before must not silently continue unsigned or in clear."""
        heads = heads_path_for(self.path)
        if self._signing is None and heads.exists():
            raise AuditKeyError(f"audit trail {self.path} is signed (its heads log {heads} exists): open it with "
                                "signing_key=, or it would continue unsigned")
        keystore = keystore_path_for(self.path)
        if self._encryption is None and keystore.exists():
            raise AuditKeyError(f"audit trail {self.path} is encrypted (its key store {keystore} exists): open it "
                                "with encryption=, or personal content would be written in clear")

    def _open_keys(self) -> None:
        """Open the heads log (resume the tree from its last head) and the key store."""
        if self._encryption is not None:
            master = load_master_key(self._encryption.master_key)
            self._keystore = KeyStore(self._encryption.keystore or keystore_path_for(self.path), master)
            self._sealer = Sealer(self._keystore)
            self._expire_if_due()
        if self._signing is not None:
            self._signer = HeadSigner(self.path, self._signing, every=self._head_every,
                                      interval_s=self._head_interval_s, witness=self._witness)
            self._sink.track_tree(self._signer.resume())

    def _release(self) -> None:
        self._sink.close()
        if self._signer is not None:
            self._signer.close()
        if self._keystore is not None:
            self._keystore.close()

    # -- public API -------------------------------------------------------------------------
    def append(self, record: AuditRecord) -> Future:
        """Queue ``record``; the returned future resolves to an ``AuditAck`` once durable."""
        if not isinstance(record, AuditRecord):
            raise TypeError(f"AuditLog.append expects an AuditRecord, got {type(record).__name__}")
        self._check_open()
        fut: Future = Future()
        self._queue.put(_Pending(record, fut))
        return fut

    def flush(self, timeout: float | None = None) -> None:
        """Block until every record appended before this call is durable per the fsync policy."""
        self._check_open()
        fut: Future = Future()
        self._queue.put(_Pending(None, fut))
        fut.result(timeout)

    def checkpoint(self, timeout: float | None = None) -> SignedTreeHead | None:
        """Flush, then sign a tree head over everything appended so far (None for an unsigned trail)."""
        self._check_open()
        fut: Future = Future()
        self._queue.put(_Pending(None, fut, sign=True))
        fut.result(timeout)
        return self.head

    @property
    def head(self) -> SignedTreeHead | None:
        """The latest signed tree head (None when unsigned, or none signed yet)."""
        return self._signer.head if self._signer is not None else None

    @property
    def key_id(self) -> str | None:
        """The id of the signing key (SHA-256 of its public key), or None for an unsigned trail."""
        return self._signing.key_id if self._signing is not None else None

    def erase_subject(self, subject: str) -> int:
        """Destroy ``subject``'s content keys: their records stay (and verify) but cannot be read.

        Returns how many keys (days) were destroyed. Needs ``encryption=``.
        """
        return self._require_keystore().erase_subject(subject)

    def expire(self, retention_days: int | None = None) -> int:
        """Destroy the content keys of days older than ``retention_days`` (default: the configured one)."""
        days = retention_days if retention_days is not None else (
            self._encryption.retention_days if self._encryption is not None else None)
        if days is None:
            raise ValueError("expire: no retention_days given or configured")
        return self._require_keystore().expire(days)

    def _require_keystore(self) -> KeyStore:
        if self._keystore is None:
            raise AuditError(f"audit log {self.path} is not encrypted (open it with encryption=)")
        return self._keystore

    def _expire_if_due(self) -> None:
        """Apply the retention period once per UTC day (at open, then when the day changes)."""
        enc = self._encryption
        today = datetime.now(UTC).date().isoformat()
        if enc is None or enc.retention_days is None or self._keystore is None or self._expired_on == today:
            return
        destroyed = self._keystore.expire(enc.retention_days)
        self._expired_on = today
        if destroyed:
            log.info("audit log %s: retention of %d days destroyed %d content keys", self.path,
                     enc.retention_days, destroyed)

    def __repr__(self) -> str:
        signed = f", signed by key id {self._signing.key_id[:16]}..." if self._signing is not None else ""
        encrypted = ", encrypted" if self._encryption is not None else ""
        return f"AuditLog({self.path!r}, fsync={self.fsync!r}{signed}{encrypted})"

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush, stop the writer thread and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise AuditError(f"audit log {self.path} is closed")
        if self._failure is not None:
            raise AuditError(f"audit log {self.path} failed earlier: {self._failure!r}") from self._failure

    # -- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        waiting: list[_Pending] = []  # appended to the sink, waiting for the sync that acks them
        first_wait = 0.0
        stop = False
        while not stop:
            group, stop = self._take_group(self._timeout(waiting, first_wait))
            if group:
                if not waiting:
                    first_wait = time.monotonic()
                waiting.extend(self._write(group))
            barrier = any(p.record is None for p in group)
            held: list[_Pending] = []  # checkpoint() barriers: answered once the head is signed
            if waiting and (stop or barrier or self._sync_due(len(waiting), first_wait)):
                held = [p for p in waiting if p.sign]
                self._sync_and_ack([p for p in waiting if not p.sign])
                waiting = []
            if not waiting:  # every record in the tree is durable: a head may cover them
                self._maybe_sign(force=stop or bool(held))
            for p in held:
                if self._failure is not None:
                    p.future.set_exception(AuditError(f"audit log {self.path} failed: {self._failure!r}"))
                else:
                    p.future.set_result(None)
        self._release()

    def _timeout(self, waiting: list[_Pending], first_wait: float) -> float | None:
        """How long the writer may wait for the next record: the batch deadline, the head deadline."""
        deadlines = [first_wait + self._batch_interval_s] if waiting else []
        if self._signer is not None and self._sink.tree is not None:
            head_due = self._signer.deadline(self._sink.tree)
            deadlines += [head_due] if head_due is not None else []
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _maybe_sign(self, force: bool) -> None:
        """Sign a tree head if one is due (``HeadSigner``); a head that cannot be written stops the trail."""
        if self._signer is None or self._sink.tree is None or self._failure is not None:
            return
        try:
            self._signer.maybe_sign(self._sink.tree, self._sink.leaves, force)
        except Exception as e:  # the records are durable, but nothing signs them: stop accepting more
            log.error("audit log %s: writing a signed tree head failed (%s)", self.path, type(e).__name__)
            self._failure = e

    def _take_group(self, timeout: float | None) -> tuple[list[_Pending], bool]:
        """Wait up to ``timeout`` for one item, then drain what is already queued."""
        group: list[_Pending] = []
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return group, False
        while True:
            if item is _STOP:
                return group, True
            group.append(item)
            if len(group) >= _MAX_GROUP:
                return group, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return group, False

    def _sync_due(self, n_waiting: int, first_wait: float) -> bool:
        if self.fsync != "batch":
            return True
        return n_waiting >= self._batch_size or time.monotonic() - first_wait >= self._batch_interval_s

    def _write(self, group: list[_Pending]) -> list[_Pending]:
        """Append the group's records; fail their futures (and the log) if the sink fails."""
        records = [p for p in group if p.record is not None]
        try:
            linked = self._sink.append(self._bodies(records)) if records else []
        except Exception as e:  # disk full, I/O error: the chain tail is now unknown
            log.exception("audit log %s: write failed", self.path)
            self._failure = e
            for p in group:
                p.future.set_exception(AuditError(f"audit write failed: {e!r}"))
            return []
        for p, entry in zip(records, linked, strict=True):
            p.ack = AuditAck(entry["record_id"], entry["seq"], entry["hash"])
        return group

    def _bodies(self, records: list[_Pending]) -> list[dict[str, Any]]:
        """The bodies to chain: sealed when the trail is encrypted."""
        bodies = [p.record.body() for p in records if p.record is not None]
        if self._sealer is None:
            return bodies
        self._expire_if_due()
        return self._sealer.seal_many(bodies)

    def _sync_and_ack(self, waiting: list[_Pending]) -> None:
        try:
            if self.fsync != "never":
                self._sink.sync()
        except Exception as e:
            log.exception("audit log %s: fsync failed", self.path)
            self._failure = e
            for p in waiting:
                p.future.set_exception(AuditError(f"audit fsync failed: {e!r}"))
            return
        for p in waiting:
            p.future.set_result(p.ack)
