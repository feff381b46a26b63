"""The weights' sha256 (the audit's model identity), hashed off the load's critical path and cached.

Hashing a multi-GB file takes seconds, so ``hash_in_background`` does it on a daemon thread while the
engine starts; the 64-character result is cached under ``$BASTION_CACHE_DIR`` (default
``~/.cache/bastion``) keyed by the files' (path, size, mtime), so a file is hashed once. Entries are
written to a temporary file and renamed into place, so concurrent loaders never see half an entry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from bastion.model.config import ModelConfig

_HASH_CHUNK = 8 << 20
# bump when the cached layout or conversion changes, so stale entries are never reused
_FORMAT_VERSION = "1"


def cache_root() -> Path:
    """``$BASTION_CACHE_DIR`` or ``~/.cache/bastion``."""
    return Path(os.environ.get("BASTION_CACHE_DIR") or Path.home() / ".cache" / "bastion")


def file_identity(paths: Sequence[Path]) -> str:
    """A hex key for the files' (resolved path, size, mtime): it changes whenever a file does."""
    digest = hashlib.sha256(_FORMAT_VERSION.encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:32]


def _hash_files(paths: Sequence[Path], progress: bool) -> str:
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc="hashing weights", leave=False, disable=not progress) as bar:
        for path in paths:
            with path.open("rb") as f:
                while chunk := f.read(_HASH_CHUNK):
                    digest.update(chunk)
                    bar.update(len(chunk))
    return digest.hexdigest()


def weights_sha256(paths: Sequence[Path], progress: bool = True) -> str:
    """sha256 of the concatenated files, computed once per (path, size, mtime) and cached."""
    entry = cache_root() / "sha256" / f"{file_identity(paths)}.txt"
    if entry.is_file():
        cached = entry.read_text().strip()
        if len(cached) == 64:
            return cached
    value = _hash_files(paths, progress)
    _write_atomic(entry, value)
    return value


def hash_in_background(paths: Sequence[Path], config: ModelConfig) -> threading.Thread:
    """Start a daemon thread that sets ``config.weights_sha256`` to ``weights_sha256(paths)``; join it to wait.

    An unreadable file leaves the field empty (the load itself has already read what it needs).
    """
    def run() -> None:
        try:
            config.weights_sha256 = weights_sha256(paths, progress=False)
        except OSError:
            config.weights_sha256 = ""

    thread = threading.Thread(target=run, name="bastion-weights-sha256", daemon=True)
    thread.start()
    return thread


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
