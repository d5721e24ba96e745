"""The layout of a ``compare`` run directory, and how to find its selected model.

::

    runs/NAME/
      split.csv            the split every model used
      models/<arch>/       one saved model per architecture (model.json + weights.safetensors)
      best                 -> models/<arch>  (symlink; a one-line text file where symlinks fail)
      comparison.csv, metrics.json, predictions.csv, report.md, report.html, plots/

``best`` points at the model chosen by *validation* accuracy; anything that takes a model
directory (``serve``, ``predict``, ``evaluate``, :func:`resolve_model_dir`) also accepts the run
directory and follows ``best``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from image_classifier.errors import ModelFormatError

log = logging.getLogger(__name__)

# Every file name of a run directory and of a saved model directory lives here, and only here.
# A run directory (``compare``):
BEST_NAME = "best"
MODELS_DIR = "models"
SPLIT_NAME = "split.csv"
METRICS_NAME = "metrics.json"
COMPARISON_CSV_NAME = "comparison.csv"
PREDICTIONS_CSV_NAME = "predictions.csv"
REPORT_MD_NAME = "report.md"
REPORT_HTML_NAME = "report.html"
PLOTS_DIR = "plots"
# A saved model directory (``train``; ``models/<arch>/`` of a run):
CARD_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
BACKEND_RECORD_NAME = "backend.json"
ONNX_NAME = "model.onnx"
ONNX_INT8_NAME = "model.int8.onnx"
RESUME_NAME = "resume.safetensors"


def model_dir_for(run_dir: str | os.PathLike, arch: str) -> Path:
    return Path(run_dir) / MODELS_DIR / arch


def write_best_pointer(run_dir: str | os.PathLike, model_dir: str | os.PathLike) -> Path:
    """Make ``run_dir/best`` point at ``model_dir`` (relative, so the run folder can be moved)."""
    run_dir = Path(run_dir)
    link = run_dir / BEST_NAME
    target = os.path.relpath(Path(model_dir).resolve(), run_dir.resolve())
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise ModelFormatError(f"{link} exists and is not a link or pointer file; move it away")
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError as err:  # e.g. Windows without developer mode, some network filesystems
        log.debug("symlink failed (%s); writing a pointer file instead", err)
        link.write_text(target + "\n", encoding="utf-8")
    return link


def read_best_pointer(run_dir: str | os.PathLike) -> Path | None:
    """The model directory ``run_dir/best`` designates, or None when there is no pointer."""
    link = Path(run_dir) / BEST_NAME
    if link.is_symlink() or link.is_dir():
        return link.resolve()
    if link.is_file():
        target = link.read_text(encoding="utf-8").strip()
        return (Path(run_dir) / target).resolve()
    return None


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A saved model directory from a model dir, a run dir (its ``best``) or a ``best`` pointer."""
    path = Path(path)
    if (path / CARD_NAME).is_file():
        return path
    if path.is_file() and path.name == BEST_NAME:
        path = path.parent
    best = read_best_pointer(path)
    if best is not None:
        if (best / CARD_NAME).is_file():
            return best
        raise ModelFormatError(f"{path / BEST_NAME} points at {best}, which is not a saved model")
    if not path.exists():
        raise ModelFormatError(f"{path} does not exist")
    raise ModelFormatError(
        f"{path} is neither a saved model (no {CARD_NAME}) nor a compare run (no {BEST_NAME}); "
        "pass a directory made by `image-classifier train` or `image-classifier compare`"
    )
