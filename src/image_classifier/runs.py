"""The layout of a run directory and of a saved model directory, and how to find things in them.

::

    runs/NAME/             (``compare``; ``evaluate`` writes the report files only)
      split.csv            the split every model used
      models/<arch>/       one saved model per architecture (model.json + weights.safetensors)
      models/ensemble/     the ensemble compare kept, if any (model.json listing members by relative path)
      best                 -> models/<arch>  (symlink; a one-line text file where symlinks fail)
      comparison.csv, metrics.json, predictions.csv, report.md, report.html, plots/

    models/ARCH/           (``train --out``; also each ``models/<arch>/`` of a run)
      model.json, weights.safetensors, split.csv (``train`` only), backend.json, model.onnx, ...

    OUT/                   (``sort MODEL DIR --out OUT``)
      predictions.csv, faces.csv, unreadable.csv, sort.json, <class>/ and unknown/ (--copy, --link)

``best`` points at the model chosen by *validation* accuracy; anything that takes a model
directory (``serve``, ``predict``, ``evaluate``, :func:`resolve_model_dir`) also accepts the run
directory and follows ``best``. Every file name is declared below and nowhere else; the
functions after them find a run's models, its best model, the split of a run or of a model, and
read its metrics, so no caller rebuilds a path by hand.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

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
#: Inside PLOTS_DIR: one test photo with the face masked, only the face, in greyscale (compare's shortcut audit).
SHORTCUT_EXAMPLE_NAME = "shortcut-example.png"
#: Inside PLOTS_DIR: a face thumbnail per suspect label (compare's face survey), ``<n>.jpg``.
SUSPECTS_DIR = "suspect_labels"
#: Grad-CAM overlays of each model's misclassified test images: ``explanations/<model>/<image>.png``.
EXPLANATIONS_DIR = "explanations"
# A saved model directory (``train``; ``models/<arch>/`` of a run):
CARD_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
#: Where a save writes new weights while the card still points at ``weights.safetensors``
#: (training's interim checkpoints may leave it until the final save).
NEXT_WEIGHTS_NAME = "weights.next.safetensors"
BACKEND_RECORD_NAME = "backend.json"
ONNX_NAME = "model.onnx"
ONNX_INT8_NAME = "model.int8.onnx"
RESUME_NAME = "resume.safetensors"
# compare's ensemble: a model directory (card only) beside the others, listing them as members.
ENSEMBLE_NAME = "ensemble"
# A sorted folder (``sort MODEL DIR --out OUT``): predictions.csv (PREDICTIONS_CSV_NAME, one row per
# photo), faces.csv (one row per face), unreadable.csv, sort.json (the model and threshold it was
# made with), and with --copy/--link OUT/<class>/ and OUT/unknown/ (inference.rejection.UNKNOWN).
FACES_CSV_NAME = "faces.csv"
UNREADABLE_CSV_NAME = "unreadable.csv"
SORT_RECORD_NAME = "sort.json"


def model_dir_for(run_dir: str | os.PathLike, arch: str) -> Path:
    return Path(run_dir) / MODELS_DIR / arch


def ensemble_dir_for(run_dir: str | os.PathLike) -> Path:
    """``run_dir/models/ensemble``: where ``compare`` saves the ensemble it keeps."""
    return Path(run_dir) / MODELS_DIR / ENSEMBLE_NAME


def is_model_dir(path: str | os.PathLike) -> bool:
    """A saved model directory: it holds a card."""
    return (Path(path) / CARD_NAME).is_file()


def models_of_run(run_dir: str | os.PathLike) -> dict[str, Path]:
    """``{name: model dir}`` of the saved models in ``run_dir/models``, by name (empty when none)."""
    models = Path(run_dir) / MODELS_DIR
    if not models.is_dir():
        return {}
    return {p.name: p for p in sorted(models.iterdir()) if is_model_dir(p)}


def run_of_model_dir(model_dir: str | os.PathLike) -> Path | None:
    """``runs/NAME`` when ``model_dir`` is ``runs/NAME/models/<arch>`` (or ``runs/NAME/best``)."""
    resolved = Path(model_dir).resolve()
    return resolved.parent.parent if resolved.parent.name == MODELS_DIR else None


def split_of_run(run_dir: str | os.PathLike) -> Path | None:
    """The split every model of a compare run used (``run_dir/split.csv``), when it is there."""
    path = Path(run_dir) / SPLIT_NAME
    return path if path.is_file() else None


def split_of_model_dir(model_dir: str | os.PathLike) -> Path | None:
    """The split a saved model was trained on, where its run keeps it: next to the model
    (``train --out DIR`` writes ``DIR/split.csv``), else the compare run's ``split.csv``.

    Only where the file is: whether it is the split the model used is the card's to say
    (its ``split_manifest_sha256``)."""
    own = Path(model_dir) / SPLIT_NAME
    if own.is_file():
        return own
    run_dir = run_of_model_dir(model_dir)
    return split_of_run(run_dir) if run_dir is not None else None


def best_model_name(run_dir: str | os.PathLike, models: dict[str, Path] | None = None) -> str | None:
    """The name (in ``models``, default :func:`models_of_run`) of the model ``run_dir/best``
    designates; None when the run has no pointer. A pointer at anything else is an error."""
    models = models_of_run(run_dir) if models is None else models
    target = read_best_pointer(run_dir)
    if target is None:
        return None
    for name, path in models.items():
        if path.resolve() == target:
            return name
    raise ModelFormatError(
        f"{Path(run_dir) / BEST_NAME} points at {target}, which is not one of the run's models "
        f"({', '.join(models)}); re-run `image-classifier compare` or serve one model directory instead")


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``run_dir/metrics.json`` as written by ``compare`` or ``evaluate``; None when there is none.

    A file that cannot be read or parsed is logged and treated as absent: the metrics only add to
    what a run directory offers (its models work without them)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("ignoring %s: %s", path, err)
        return None
    if not isinstance(data, dict):
        log.warning("ignoring %s: not a JSON object", path)
        return None
    return data


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
    if is_model_dir(path):
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
