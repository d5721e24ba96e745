"""Small file helpers shared by every module that writes or fingerprints files (no torch import),
and where the tool keeps its caches (:func:`default_cache_dir`).

Atomic writes: the data goes to a temporary file in the same folder, is flushed to disk, then
renamed over the target, so a reader (or a run killed mid-write) sees the old file or the whole new
one, never half of it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask() can only be read by setting it, which is not thread-safe later.
_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 files; give the final file the usual umask-based mode.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks (weights files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """The root of the on-disk caches (decoded images, and faces beside them in ``faces-v<N>``):
    ``$IMAGE_CLASSIFIER_CACHE_DIR``, else ``$XDG_CACHE_HOME/image-classifier/decoded``, else
    ``~/.cache/image-classifier/decoded``. Here, not in ``training``, so that commands that only
    need faces (``check``, ``group``) find the cache without importing torch."""
    env = os.environ.get("IMAGE_CLASSIFIER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "image-classifier" / "decoded"
