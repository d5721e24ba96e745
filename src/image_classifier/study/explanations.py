"""Why each model got its misclassified test images wrong: the overlays of the report's error gallery.

``compare`` calls :func:`explain_errors` once per model, right after scoring the test split, with
the classifier it has loaded and the decoded images it already holds (the run's
:class:`~image_classifier.evaluate.evaluation.DecodeCache`): only the misclassified images are
explained, and at most as many as the gallery shows (the most confident mistakes first), so the
cost is one forward and backward pass per mistake shown. Each overlay is a PNG under
``explanations/<model>/`` (:data:`~image_classifier.runs.EXPLANATIONS_DIR`), referenced from the
study by :attr:`Misclassified.overlay <image_classifier.results.Misclassified.overlay>`.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from image_classifier.errors import ImageClassifierError
from image_classifier.evaluate.evaluation import DecodeCache, Evaluation
from image_classifier.fileio import atomic_write_bytes
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.explain import explain
from image_classifier.report import plot_slug
from image_classifier.report.plots import GALLERY_MAX_ITEMS
from image_classifier.results import Misclassified
from image_classifier.runs import EXPLANATIONS_DIR

log = logging.getLogger(__name__)


@dataclass
class ExplainedErrors:
    errors: list[Misclassified]  # the evaluation's errors, in its order, overlays filled in where drawn
    explained: int  # how many overlays were written
    seconds: float


def _file_name(rel_path: str) -> str:
    """A flat, file-name-safe PNG name for an image's path inside the dataset."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", rel_path.replace("/", "__")).strip("._") + ".png"


def explain_errors(classifier: Classifier, evaluation: Evaluation, run_dir: str | os.PathLike, model: str, *,
                   cache: DecodeCache | None = None, limit: int = GALLERY_MAX_ITEMS) -> ExplainedErrors:
    """Write the overlay of each of ``model``'s most confident ``limit`` mistakes (why it said the
    wrong class) and return the errors with :attr:`Misclassified.overlay` set. Earlier overlays of
    the model are removed first, so the folder holds exactly this run's."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    rel_dir = f"{EXPLANATIONS_DIR}/{plot_slug(model)}"
    shutil.rmtree(run_dir / rel_dir, ignore_errors=True)
    errors = evaluation.errors
    shown = sorted(range(len(errors)), key=lambda i: -errors[i].confidence)[:limit]
    out = list(errors)
    for i in shown:
        err = errors[i]
        try:
            decoded = cache.get(Path(err.path), classifier) if cache is not None else None
            explanation = explain(classifier, err.path, target=err.predicted, decoded=decoded)
        except (ImageClassifierError, OSError, ValueError) as exc:  # one bad file must not stop the run
            log.warning("cannot explain %s: %s", err.rel_path, exc)
            continue
        rel = f"{rel_dir}/{_file_name(err.rel_path)}"
        (run_dir / rel_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / rel, explanation.png())
        out[i] = replace(err, overlay=rel)
    explained = sum(e.overlay is not None for e in out)
    return ExplainedErrors(out, explained, time.perf_counter() - start)
