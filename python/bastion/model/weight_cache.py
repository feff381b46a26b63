"""On-disk cache of converted models and of weight-file hashes.

Dequantizing a GGUF takes seconds; a second load should not. A converted model is cached as a
directory (fused weights as one safetensors file, ``config.json``, the tokenizer) keyed by the source
file's (path, size, mtime) and the dtype, and memory-mapped on reload. ``weights_sha256`` (an audit
field) is cached the same way so the file is hashed once. Entries are written to a temporary
directory and renamed into place, so concurrent loaders never see half an entry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

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


def _hash_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc="hashing weights", leave=False) as bar:
        for path in paths:
            with path.open("rb") as f:
                while chunk := f.read(_HASH_CHUNK):
                    digest.update(chunk)
                    bar.update(len(chunk))
    return digest.hexdigest()


def weights_sha256(paths: Sequence[Path]) -> str:
    """sha256 of the concatenated files, computed once per (path, size, mtime) and cached."""
    entry = cache_root() / "sha256" / f"{file_identity(paths)}.txt"
    if entry.is_file():
        cached = entry.read_text().strip()
        if len(cached) == 64:
            return cached
    value = _hash_files(paths)
    _write_atomic(entry, value)
    return value


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def converted_dir(source: Path, dtype: torch.dtype) -> Path:
    """Where the converted form of ``source`` at ``dtype`` lives (it may not exist yet)."""
    dtype_name = str(dtype).removeprefix("torch.")
    return cache_root() / "converted" / f"{source.stem}-{file_identity([source])}-{dtype_name}"


def publish_dir(staging: Path, final: Path) -> None:
    """Move a fully written ``staging`` directory to ``final``; if another process won the race, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, final)
    except OSError:  # ``final`` already exists and is not empty: an identical entry from a concurrent load
        shutil.rmtree(staging, ignore_errors=True)


def staging_dir(final: Path) -> Path:
    """A fresh temporary directory beside ``final`` (same filesystem, so ``publish_dir`` is a rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=".staging-"))
