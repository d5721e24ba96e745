"""What a training run writes, and how it survives being killed.

* The **best model** (lowest validation loss so far) is a normal saved-model directory: the
  ``out_dir`` itself (``model.json`` + weights), written with :func:`save_model`, which never
  overwrites the weights the current card points at. Killed at any moment, ``out_dir`` holds the
  last best model saved, loadable with :func:`image_classifier.load_model`.
* The **resume state** (``out_dir/resume.pt``): current weights, optimizer and scheduler state,
  early-stopping counters, history and position (phase, epoch). Tensors and primitives only, so it
  loads with ``torch.load(weights_only=True)``. Written atomically (temporary file + rename) after
  the best model, so the best model on disk is always at least as recent as the resume state.
  Removed when the run finishes.

Both are written at most every ``interval`` seconds (and at every phase end): a simple CNN's
resume state is ~3 GB (weights + Adam moments), too much to write after every 15-second epoch.

Only one process writes (``RunWriter`` exists on the main process only), so the loop can later run
under ``torchrun``/DistributedDataParallel with the other ranks passing ``writer=None``.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from image_classifier.saved_model import _ALT_WEIGHTS_NAME, CARD_NAME, WEIGHTS_NAME, save_model

log = logging.getLogger(__name__)

RESUME_NAME = "resume.pt"
RESUME_FORMAT = 1
#: Files a run owns in its output directory (``--force`` removes exactly these, nothing else).
RUN_FILES = (CARD_NAME, WEIGHTS_NAME, _ALT_WEIGHTS_NAME, RESUME_NAME)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_resume_state(path: Path) -> dict[str, Any]:
    from image_classifier.errors import ModelFormatError

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        raise ModelFormatError(f"cannot read the resume state {path}: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT:
        raise ModelFormatError(f"{path} is not a resume state written by this version of the tool")
    return payload


class RunWriter:
    """Writes the best model and the resume state of one run into ``out_dir``."""

    def __init__(self, out_dir: str | os.PathLike, interval: float = 30.0) -> None:
        self.out_dir = Path(out_dir)
        self.interval = float(interval)
        self._last = time.monotonic()
        #: Identity of the run (arch, seed, classes, recipe, split hash), stored in every resume
        #: state so that --resume refuses to continue with other data or settings.
        self.meta: dict[str, Any] = {}

    @property
    def resume_path(self) -> Path:
        return self.out_dir / RESUME_NAME

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval

    def save_best(self, state: Mapping[str, torch.Tensor], card: dict[str, Any], *, final: bool = False) -> None:
        t0 = time.perf_counter()
        save_model(state, card, self.out_dir, stable_name=final)
        log.debug("saved best model to %s in %.1f s", self.out_dir, time.perf_counter() - t0)

    def save_resume(self, payload: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        atomic_torch_save({"format": RESUME_FORMAT, **self.meta, **payload}, self.resume_path)
        self._last = time.monotonic()
        log.debug("saved resume state in %.1f s", time.perf_counter() - t0)

    def remove_resume(self) -> None:
        self.resume_path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove a previous run's files (and only those) before starting afresh."""
        for name in RUN_FILES:
            (self.out_dir / name).unlink(missing_ok=True)
