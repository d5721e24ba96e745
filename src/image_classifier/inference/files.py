"""Classifying image files with a loaded model: what ``image-classifier predict`` prints, and the
``top`` list that the web API (``POST /api/predict``) and the CLI both answer with."""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from image_classifier.data.decode import decode_each
from image_classifier.data.scan import list_files
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.options import PredictOptions


def top_labels(probabilities: Sequence[float], classes: Sequence[str], k: int | None = None) -> list[dict[str, Any]]:
    """The ``k`` most probable classes, most probable first, as ``[{"label", "probability"}]``.

    ``k`` is capped at the number of classes (None: all of them); ties keep the classes' order.
    """
    order = sorted(range(len(classes)), key=lambda c: -float(probabilities[c]))
    k = len(classes) if k is None else max(1, min(k, len(classes)))
    return [{"label": classes[c], "probability": float(probabilities[c])} for c in order[:k]]


def predict_files(classifier: Classifier, paths: Sequence[str | os.PathLike],
                  options: PredictOptions = PredictOptions()) -> list[dict[str, Any]]:
    """One entry per path, in order (a folder: each file under it, sorted by path): ``{"image", "top", "probabilities"}`` (plus, for a face model,
    the face that decided: see :meth:`Classifier.predict_details`), or ``{"image", "error", "kind"}``
    for a file that cannot be read (the others are still classified)."""
    paths = [p for path in paths for p in (list_files(path) if Path(path).is_dir() else [path])]
    results: list[dict[str, Any]] = [{"image": os.fspath(path)} for path in paths]
    decoded = decode_each(paths, classifier.decode, what=None)
    for i, err in decoded.failures.items():
        results[i].update({"error": err.reason, "kind": err.kind})
    if decoded.images:
        probs, details = classifier.predict_details(decoded.images, batch_size=options.batch_size)
        classes = list(classifier.classes)
        for i, row, detail in zip(decoded.kept, probs, details):
            results[i].update(detail)  # a face model: the face box that decided, or null
            results[i]["top"] = top_labels(row, classes, options.top_k)
            results[i]["probabilities"] = {c: float(p) for c, p in zip(classes, row)}
    return results
