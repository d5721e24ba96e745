"""What a training run writes, and how it survives being killed.

* The **best model** (lowest validation loss so far) is a normal saved-model directory: the
  ``out_dir`` itself (``model.json`` + weights), written with :func:`save_model`, which never
  overwrites the weights the current card points at. Killed at any moment, ``out_dir`` holds the
  last best model saved, loadable with :func:`image_classifier.load_model`.
* The **resume state** (``out_dir/resume.safetensors``): current weights, optimizer and scheduler
  state, early-stopping counters, history and position (phase, epoch), as one safetensors file
  whose metadata holds the nested structure (:func:`image_classifier.tensorio.save_tree`): no
  pickle. Written atomically (temporary file + rename) after the best model, so the best model on
  disk is always at least as recent as the resume state. Removed when the run finishes.

Both are written at most every ``interval`` seconds and at every phase end, and never more often
than every 9x the time the last write took: the simple CNN's resume state is 3 GB (weights + Adam
moments), about 9 s to write here, so writing it after every ~10-second epoch would double the
training time; this way checkpoints cost at most ~10 %.

Only one process writes (``RunWriter`` exists on the main process only), so the loop can later run
under ``torchrun``/DistributedDataParallel with the other ranks passing ``writer=None``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from image_classifier.errors import ModelFormatError
from image_classifier.runs import CARD_NAME, NEXT_WEIGHTS_NAME, RESUME_NAME, WEIGHTS_NAME
from image_classifier.saved_model import ModelCard, save_model
from image_classifier.tensorio import load_tree, save_tree

log = logging.getLogger(__name__)

RESUME_KIND = "image-classifier-resume-v1"
#: A checkpoint may take at most 1 / (1 + this) of the training time.
COST_FACTOR = 9.0
#: Files a run owns in its output directory (``--force`` removes exactly these, nothing else).
RUN_FILES = (CARD_NAME, WEIGHTS_NAME, NEXT_WEIGHTS_NAME, RESUME_NAME)


def load_resume_state(path: Path) -> dict[str, Any]:
    try:
        payload = load_tree(path, kind=RESUME_KIND)
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        raise ModelFormatError(f"cannot read the resume state {path} ({err}); start the run again without --resume") from err
    if not isinstance(payload, dict) or "state" not in payload:
        raise ModelFormatError(f"{path} is not a resume state written by this version of the tool")
    return payload


def peek_resume_state(path: Path) -> dict[str, Any]:
    """The run identity stored in a resume state (arch, seed, recipe, ...) without loading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tree = json.loads(meta["tree"])
    except Exception as err:  # noqa: BLE001
        raise ModelFormatError(f"cannot read the resume state {path} ({err}); start the run again without --resume") from err
    identity = {k: v for k, v in tree.items() if k in ("arch", "seed", "classes", "recipe", "split_manifest_sha256")}
    state = tree.get("state")
    # Epochs finished when the state was written (the primitives of TrainState are stored as is).
    identity["epoch"] = state.get("global_epoch") if isinstance(state, dict) else None
    return identity


class RunWriter:
    """Writes the best model and the resume state of one run into ``out_dir``."""

    def __init__(self, out_dir: str | os.PathLike, interval: float = 30.0) -> None:
        self.out_dir = Path(out_dir)
        self.interval = float(interval)
        self._last = time.monotonic()
        self._cost = 0.0  # seconds the last checkpoint (best model + resume state) took
        self._pending = 0.0
        #: Identity of the run (arch, seed, classes, recipe, split hash), stored in every resume
        #: state so that --resume refuses to continue with other data or settings.
        self.meta: dict[str, Any] = {}

    @property
    def resume_path(self) -> Path:
        return self.out_dir / RESUME_NAME

    def due(self) -> bool:
        return time.monotonic() - self._last >= max(self.interval, COST_FACTOR * self._cost)

    def save_best(self, state: Mapping[str, torch.Tensor], card: ModelCard | dict[str, Any], *, final: bool = False) -> None:
        t0 = time.perf_counter()
        save_model(state, card, self.out_dir, stable_name=final)
        self._pending += time.perf_counter() - t0
        log.debug("saved best model to %s in %.1f s", self.out_dir, time.perf_counter() - t0)

    def save_resume(self, payload: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        save_tree(self.resume_path, {**self.meta, **payload}, kind=RESUME_KIND)
        took = time.perf_counter() - t0
        self._cost, self._pending = self._pending + took, 0.0
        self._last = time.monotonic()
        log.debug("saved resume state in %.1f s", took)

    def remove_resume(self) -> None:
        self.resume_path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove a previous run's files (and only those) before starting afresh."""
        for name in RUN_FILES:
            (self.out_dir / name).unlink(missing_ok=True)
