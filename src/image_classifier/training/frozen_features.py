"""What a frozen ImageNet backbone computes for each image, cached on disk by content.

The out-of-fold estimates of :mod:`image_classifier.evaluate.cross_validation` refit a linear head
on these features in every fold; the backbone runs once per image ever (keyed by the SHA-256 of
the weights file, the input size and the image's own SHA-256), so a re-run, another seed or another
model on the same backbone costs nothing but reading the files.
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from image_classifier.fileio import atomic_write_bytes, sha256_file
from image_classifier.machine import bf16_supported
from image_classifier.models.registry import build_model, get_arch
from image_classifier.models.weights import resolve_pretrained
from image_classifier.training.cache import ImageCache

log = logging.getLogger(__name__)

#: Images per forward pass.
BATCH = 32


class FrozenFeatures:
    """The pooled output of ``arch``'s pretrained backbone (never fine-tuned), per image."""

    def __init__(self, arch: str, weights: str | os.PathLike | None, cache_dir: str | os.PathLike | None,
                 images: ImageCache, *, progress: bool = False) -> None:
        spec = get_arch(arch)
        if spec.pretrained is None:
            raise ValueError(f"{arch} trains from scratch: it has no frozen ImageNet backbone")
        self.arch = arch
        self.preprocessing = spec.preprocessing
        self.resolved = resolve_pretrained(arch, spec.pretrained, weights)
        self.weights_sha256 = sha256_file(self.resolved.source)
        variant = "-".join(f"{k}={v}" for k, v in sorted(self.resolved.options.items()))
        self.key = f"{spec.pretrained.torchvision_weights}-{self.weights_sha256[:16]}-{self.preprocessing.input_size}-{variant}"
        self.root = Path(cache_dir).expanduser() / "frozen-features" / self.key if cache_dir is not None else None
        self.images = images
        self.progress = progress
        self._network: torch.nn.Module | None = None
        # Rows already read or computed in this process, by image SHA-256: the face model's settings
        # and its picture bank read the same photos' features (without a disk cache they would be
        # computed again).
        self._rows: dict[str, np.ndarray] = {}

    @property
    def source(self) -> str:
        """Which weights: what the report names."""
        return f"{self.arch}'s ImageNet backbone ({Path(self.resolved.source).name})"

    def _path(self, sha: str) -> Path | None:
        return None if self.root is None else self.root / sha[:2] / f"{sha}.npy"

    def _backbone(self) -> torch.nn.Module:
        if self._network is None:
            net, _ = build_model(self.arch, 2, pretrained=True, resolved=self.resolved)
            self._network = net.backbone.eval().to(memory_format=torch.channels_last)
        return self._network

    def _read(self, sha: str) -> np.ndarray | None:
        path = self._path(sha)
        if path is None or not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:  # a damaged entry is a miss, never an error
            log.debug("ignoring unreadable feature cache entry %s: %s", path, err)
            return None

    def _write(self, sha: str, row: np.ndarray) -> None:
        path = self._path(sha)
        if path is None:
            return
        buf = io.BytesIO()
        np.save(buf, row, allow_pickle=False)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as err:  # a read-only or full cache only costs time
            log.warning("cannot write feature cache %s: %s", path, err)

    def compute(self, records: Sequence[Any]) -> tuple[np.ndarray, list[int]]:
        """Features (kept, d) of ``records`` (split records: ``path``, ``rel_path``, ``sha256``,
        ``label``) and the indices of the records kept (those that decode)."""
        rows: dict[int, np.ndarray] = {}
        missing = []
        for i, rec in enumerate(records):
            found = self._rows.get(rec.sha256)
            if found is None:
                found = self._read(rec.sha256)
            if found is None:
                missing.append(i)
            else:
                rows[i] = self._rows[rec.sha256] = found
        if missing:
            decoded = self.images.decode([records[i] for i in missing], self.preprocessing)
            where = {rec.rel_path: i for i, rec in ((i, records[i]) for i in missing)}
            net = self._backbone()
            use_bf16 = bf16_supported()
            bar = tqdm(total=len(decoded), desc=f"{self.arch} frozen features", unit="img", disable=not self.progress,
                       leave=False)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                for start in range(0, len(decoded), BATCH):
                    batch = self.preprocessing.normalize(decoded.images[start:start + BATCH])
                    out = net(batch.contiguous(memory_format=torch.channels_last)).float().numpy()
                    for rel, row in zip(decoded.rel_paths[start:start + BATCH], out):
                        i = where[rel]
                        rows[i] = self._rows[records[i].sha256] = row
                        self._write(records[i].sha256, row)
                    bar.update(len(out))
            bar.close()
        kept = sorted(rows)
        dim = next(iter(rows.values())).shape[0] if rows else 0
        return (np.stack([rows[i] for i in kept]) if kept else np.empty((0, dim))), kept
