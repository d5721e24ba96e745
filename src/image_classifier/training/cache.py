"""Decode and resize each training image once per run (and, with a disk store, once per machine).

The naive way re-decodes every JPEG every epoch; here each image becomes a (3, S, S) uint8 array
once and training augments those cached arrays. The pixels are exactly what prediction feeds the
model: the same :func:`~image_classifier.data.decode.load_image` call (EXIF orientation, JPEG draft
mode at the model's input size) followed by the same :meth:`Preprocessing.to_uint8` resize.

Keys are ``(file sha256, input size, resize mode)``: a file renamed or moved is still a hit, a file
whose bytes changed is a miss. One :class:`ImageCache` can serve several architectures in one
``compare`` run (three input sizes: 128, 224 and the face model's 320). With a ``root`` directory
each array is also stored as ``ROOT/v<DECODE_VERSION>-<size>-<mode>/<sha[:2]>/<sha>.npy`` so a
re-run skips decoding; the CLI's default root is :func:`default_cache_dir`
(``$IMAGE_CLASSIFIER_CACHE_DIR``, else ``$XDG_CACHE_HOME/image-classifier/decoded``, else
``~/.cache/image-classifier/decoded``).
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from image_classifier.data.decode import decode_each, load_image
from image_classifier.preprocessing import Preprocessing
from image_classifier.fileio import atomic_write_bytes, default_cache_dir, sha256_file

# default_cache_dir lives in fileio (no torch needed to find the cache); it is re-exported here for
# the callers that have always imported it from this module, so it is listed in __all__.
__all__ = ["DECODE_VERSION", "DecodedSet", "ImageCache", "default_cache_dir"]

log = logging.getLogger(__name__)

#: Bump when decoding or resizing changes pixels, so stale disk entries are never read.
DECODE_VERSION = 1


@dataclass
class DecodedSet:
    """The decoded images of one subset: ``images`` (N, 3, S, S) uint8, aligned ``labels`` and
    ``rel_paths``; ``skipped`` maps the files that could not be decoded to the reason."""

    images: torch.Tensor
    labels: torch.Tensor
    rel_paths: list[str]
    skipped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


class ImageCache:
    """Decoded, resized uint8 images keyed by (sha256, input size, resize mode); see the module doc."""

    def __init__(self, root: str | os.PathLike | None = None, *, max_workers: int | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.max_workers = max_workers or max(1, torch.get_num_threads())
        self._mem: dict[tuple[str, int, str], np.ndarray] = {}
        self.stats = {"memory_hits": 0, "disk_hits": 0, "decoded": 0}

    def _disk_path(self, key: tuple[str, int, str]) -> Path | None:
        if self.root is None:
            return None
        sha, size, mode = key
        return self.root / f"v{DECODE_VERSION}-{size}-{mode}" / sha[:2] / f"{sha}.npy"

    def _load_one(self, path: str, sha: str | None, prep: Preprocessing) -> tuple[tuple[str, int, str], np.ndarray]:
        sha = sha or sha256_file(path)
        key = (sha, prep.input_size, prep.resize_mode)
        if key in self._mem:
            self.stats["memory_hits"] += 1
            return key, self._mem[key]
        disk = self._disk_path(key)
        if disk is not None and disk.is_file():
            try:
                arr = np.load(disk, allow_pickle=False)
                if arr.shape == (3, prep.input_size, prep.input_size) and arr.dtype == np.uint8:
                    self.stats["disk_hits"] += 1
                    return key, arr
                log.debug("ignoring cache entry %s with shape %s", disk, arr.shape)
            except (OSError, ValueError) as err:  # a damaged entry is a miss, never an error
                log.debug("ignoring unreadable cache entry %s: %s", disk, err)
        # The same two calls Classifier.preprocess makes: training sees the pixels serving will see.
        image = load_image(path, target_size=prep.input_size)
        arr = prep.to_uint8([image])[0].numpy()
        self.stats["decoded"] += 1
        if disk is not None:
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            try:
                atomic_write_bytes(disk, buf.getvalue())
            except OSError as err:  # a read-only or full cache directory only costs speed
                log.warning("cannot write decode cache %s: %s", disk, err)
        return key, arr

    def decode(self, records: Sequence[Any], prep: Preprocessing) -> DecodedSet:
        """Decode split records (anything with ``path``, ``rel_path``, ``label`` and optionally
        ``sha256``). Unreadable files are logged and left out (listed in ``skipped``)."""
        records = list(records)

        def work(rec: Any) -> np.ndarray:
            key, arr = self._load_one(os.fspath(rec.path), getattr(rec, "sha256", None) or None, prep)
            self._mem[key] = arr
            return arr

        # Pillow releases the GIL while decoding and resizing, so threads use both cores.
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            decoded = decode_each(records, work, what="training image", name=lambda rec: rec.rel_path,
                                  mapper=pool.map)
        size = prep.input_size
        kept = [(records[i], arr) for i, arr in zip(decoded.kept, decoded.images)]
        skipped = {str(records[i].rel_path): err.reason for i, err in decoded.failures.items()}
        images = (torch.from_numpy(np.stack([arr for _, arr in kept])) if kept
                  else torch.empty(0, 3, size, size, dtype=torch.uint8))
        labels = torch.tensor([int(rec.label) for rec, _ in kept], dtype=torch.long)
        return DecodedSet(images, labels, [str(rec.rel_path) for rec, _ in kept], skipped)

    def __len__(self) -> int:
        return len(self._mem)
