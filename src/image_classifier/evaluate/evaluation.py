"""Score one loaded model on a list of labelled images (an :class:`Evaluation`): the per-model
part of ``compare`` and ``evaluate``.

Labels are matched to the model **by class name**, never by index: a folder evaluated against a
model may list its classes in another order, lack some, or (an error) hold classes the model has
never seen.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from image_classifier.data.decode import load_image
from image_classifier.errors import DatasetError
from image_classifier.evaluate.metrics import compute_metrics, uncalibrated_metrics
from image_classifier.inference.model import Model
from image_classifier.results import Misclassified, TestMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledImage:
    """One image to score: where it is, how the report names it, its true class (by name)."""

    path: Path
    rel_path: str
    class_name: str

    @classmethod
    def from_record(cls, record: Any) -> LabelledImage:
        """From a split record (anything with ``path``, ``rel_path``, ``class_name``)."""
        return cls(Path(record.path), str(record.rel_path), str(record.class_name))


def label_indices(model_classes: Sequence[str], items: Iterable[LabelledImage]) -> np.ndarray:
    """Model column index of each image's class; a class the model does not know is an error."""
    index = {name: i for i, name in enumerate(model_classes)}
    items = list(items)
    unknown = sorted({it.class_name for it in items if it.class_name not in index})
    if unknown:
        counts = {c: sum(1 for it in items if it.class_name == c) for c in unknown}
        listed = ", ".join(f"{c!r} ({counts[c]} images)" for c in unknown)
        raise DatasetError(
            f"the data has classes the model was not trained on: {listed}. The model knows "
            f"{', '.join(repr(c) for c in model_classes)}. Evaluate on a folder whose class folders "
            "are a subset of those (rename or move the others out), or train a model that includes them."
        )
    return np.array([index[it.class_name] for it in items], dtype=np.int64)


class DecodeCache:
    """Decoded test images shared by the models of one run, keyed by (path, what the model decodes).

    Decoding is the same for every model with the same :attr:`Classifier.decode_key` (the input
    size, or a face model's faces), so four CNNs on 65 test images decode each file at most twice
    (128 px and 224 px models) instead of four times.
    """

    def __init__(self) -> None:
        self._images: dict[tuple[str, Any], Any] = {}
        self.failures: dict[str, str] = {}

    def get(self, path: Path, classifier: Model) -> Any:
        key = (os.fspath(path), classifier.decode_key)
        if key not in self._images:
            # An ensemble assembles its decoding from its members' (cached here by their own evaluations).
            self._images[key] = classifier.decode_from(path, self)
        return self._images[key]

    def picture(self, path: Path, size: int) -> Any:
        """The picture itself decoded for a ``size`` px model input: what a CNN's ``decode`` gives
        (the same entry, keyed as :attr:`Classifier.decode_key` keys it), decoded here if no CNN of
        that size has asked yet. The shortcut audit builds its variants from it."""
        key = (os.fspath(path), ("image", size))
        if key not in self._images:
            self._images[key] = load_image(path, target_size=size)
        return self._images[key]


def predict_items(classifier: Model, items: Sequence[LabelledImage], *, batch_size: int = 32,
                  cache: DecodeCache | None = None) -> tuple[np.ndarray, list[int], list[dict]]:
    """Probabilities for the images that decode; returns (probs, indices of the kept items, and
    per kept item what decided it: see :meth:`Classifier.predict_details`).

    An unreadable image is logged and left out (its index is not in the list), so one bad file
    in a folder does not stop an evaluation; the caller reports how many were skipped.
    """
    cache = cache or DecodeCache()
    probs, details, decoded = classifier.predict_paths(items, cache, batch_size=batch_size)
    cache.failures.update({items[i].rel_path: err.reason for i, err in decoded.failures.items()})
    return probs, decoded.kept, details


@dataclass(frozen=True)
class Prediction:
    """What the model said about one scored image."""

    path: Path
    rel_path: str
    true: str
    predicted: str
    confidence: float  # the probability of ``predicted``
    #: What decided it (see :meth:`Classifier.predict_details`; a face model: ``face``, a box or None).
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.predicted == self.true


@dataclass
class Evaluation:
    """One model scored on a list of labelled images."""

    metrics: TestMetrics
    predictions: list[Prediction]  # one per image that decoded, in the order given
    skipped: dict[str, str]  # {rel_path: reason} of the images that could not be decoded
    probs: np.ndarray  # [scored images, model classes]

    @property
    def correct(self) -> np.ndarray:
        """Per scored image, whether the model was right (aligned with ``predictions``)."""
        return np.array([p.correct for p in self.predictions], dtype=bool)

    @property
    def errors(self) -> list[Misclassified]:
        return [Misclassified(os.fspath(p.path), p.rel_path, p.true, p.predicted, p.confidence)
                for p in self.predictions if not p.correct]


def evaluate_classifier(
    classifier: Model,
    items: Sequence[LabelledImage],
    *,
    cache: DecodeCache | None = None,
    batch_size: int = 32,
) -> Evaluation:
    """Metrics, per-image predictions and the images left out of ``classifier`` on ``items``."""
    y_all = label_indices(classifier.classes, items)  # fail before any decoding
    cache = cache or DecodeCache()
    probs, kept, details = predict_items(classifier, items, batch_size=batch_size, cache=cache)
    if not kept:
        raise DatasetError("none of the images could be decoded; run `image-classifier check` on the folder")
    y = y_all[kept]
    classes = list(classifier.classes)
    metrics = compute_metrics(y, probs, classes)
    # The model serves calibrated probabilities; the same figures before calibration come from
    # undoing its temperature(s) per image (the face head's where a face answered).
    metrics.update(uncalibrated_metrics(y, classifier.uncalibrated(probs, details)))
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    predictions = [
        Prediction(items[i].path, items[i].rel_path, classes[y[k]], classes[pred[k]], float(conf[k]), dict(details[k]))
        for k, i in enumerate(kept)
    ]
    kept_set = set(kept)
    skipped = {items[i].rel_path: cache.failures.get(items[i].rel_path, "unreadable")
               for i in range(len(items)) if i not in kept_set}
    return Evaluation(TestMetrics.from_json(metrics), predictions, skipped, probs)
