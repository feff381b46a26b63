"""Step results cached by content: a memory LRU in front of an optional SQLite file, with a TTL.

The key is the SHA-256 of the canonical JSON of a step's definition (kind, template, sampling parameters,
target model identity, fallback, ...) and of the input values it reads, so any change to either misses.
Values are JSON (a step's output and its token counts).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def content_key(definition: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of ``definition`` and ``inputs`` (TypeError if not JSON)."""
    body = json.dumps({"step": definition, "inputs": inputs}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class ResultCache:
    """``get(key)`` / ``put(key, value)`` over a memory LRU of ``max_entries`` and, with ``path``, an
    SQLite table that outlives the process. Entries older than ``ttl_s`` (None: never) are misses."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, max_entries: int = 1024,
                 ttl_s: float | None = None, clock: Callable[[], float] = time.time) -> None:
        """Open (or create) the SQLite file at ``path`` when given."""
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0 or None, got {ttl_s!r}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._memory: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = sqlite3.connect(os.fspath(path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS step_results "
                             "(key TEXT PRIMARY KEY, stored_at REAL NOT NULL, value TEXT NOT NULL)")
            self._db.commit()
        self.hits = 0
        self.misses = 0

    def _fresh(self, stored_at: float) -> bool:
        return self.ttl_s is None or self._clock() - stored_at < self.ttl_s

    def get(self, key: str) -> Any | None:
        """The cached value of ``key``, or None (absent or expired)."""
        with self._lock:
            entry = self._memory.get(key)
            if entry is None and self._db is not None:
                row = self._db.execute("SELECT stored_at, value FROM step_results WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    entry = (float(row[0]), json.loads(row[1]))
                    self._remember(key, entry)
            if entry is None or not self._fresh(entry[0]):
                self.misses += 1
                return None
            self._memory.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON) under ``key``, in memory and in the SQLite file."""
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        now = self._clock()
        with self._lock:
            self._remember(key, (now, json.loads(text)))
            if self._db is not None:
                self._db.execute("INSERT OR REPLACE INTO step_results (key, stored_at, value) VALUES (?, ?, ?)",
                                 (key, now, text))
                self._db.commit()

    def _remember(self, key: str, entry: tuple[float, Any]) -> None:
        self._memory[key] = entry
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def clear_memory(self) -> None:
        """Forget the memory tier (the SQLite tier stays): what a new process would see."""
        with self._lock:
            self._memory.clear()

    def close(self) -> None:
        """Close the SQLite file."""
        if self._db is not None:
            self._db.close()
            self._db = None
