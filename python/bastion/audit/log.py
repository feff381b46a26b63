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
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from bastion.audit.record import AuditRecord
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


class AuditLog:
    """Append-only, hash-chained audit trail at ``path`` (``.jsonl``, ``.db`` or ``.sqlite``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        fsync: FsyncPolicy = "always",
        *,
        batch_size: int = 64,
        batch_interval_s: float = 0.05,
    ) -> None:
        if fsync not in ("always", "batch", "never"):
            raise ValueError(f"fsync must be 'always', 'batch' or 'never', got {fsync!r}")
        if batch_size < 1 or batch_interval_s <= 0:
            raise ValueError("batch_size must be >= 1 and batch_interval_s > 0")
        self.path = os.fspath(path)
        self.fsync: FsyncPolicy = fsync
        self._batch_size = batch_size
        self._batch_interval_s = batch_interval_s
        self._sink: AuditSink = open_sink(path, fsync)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"audit-writer:{self.path}", daemon=True)
        self._thread.start()

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
            timeout = None
            if waiting:
                timeout = max(0.0, first_wait + self._batch_interval_s - time.monotonic())
            group, stop = self._take_group(timeout)
            if group:
                if not waiting:
                    first_wait = time.monotonic()
                waiting.extend(self._write(group))
            barrier = any(p.record is None for p in group)
            if waiting and (stop or barrier or self._sync_due(len(waiting), first_wait)):
                self._sync_and_ack(waiting)
                waiting = []
        self._sink.close()

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
            linked = self._sink.append([p.record.body() for p in records if p.record is not None]) if records else []
        except Exception as e:  # disk full, I/O error: the chain tail is now unknown
            log.exception("audit log %s: write failed", self.path)
            self._failure = e
            for p in group:
                p.future.set_exception(AuditError(f"audit write failed: {e!r}"))
            return []
        for p, entry in zip(records, linked, strict=True):
            p.ack = AuditAck(entry["record_id"], entry["seq"], entry["hash"])
        return group

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
