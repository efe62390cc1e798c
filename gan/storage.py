"""Files a run keeps on disk (checkpoints, metrics, caches): atomic writes, content hashes and cache keys."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

SHORT_HASH = 16  # hex digits kept in names and provenance


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through `write(file)` into a temp file beside `path`, then rename it over `path`.

    Readers (another rank, a second evaluation, a crashed run resumed) see the old file or the
    whole new one, never half of one. The bytes reach the disk before the rename, or a power cut
    could leave the new name pointing at an empty file (a lost checkpoint); these writes are rare
    enough that the fsync costs nothing measurable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_torch(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"), mode="w")


_file_hashes: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Short sha256 of a file's bytes (memoised per path, size and mtime: weight files are large)."""
    stat = os.stat(path)
    memo = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _file_hashes[memo] = digest.hexdigest()[:SHORT_HASH]
    return _file_hashes[memo]


def sha256_tensors(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:SHORT_HASH]


def cache_key(fields: dict[str, Any]) -> str:
    """A short digest of every field that affects a cached item (order-independent)."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:SHORT_HASH]
