"""The post-training step: fit what makes a saved model's answers trustworthy, on its
validation split only, and write it into the model card.

``fit_trust`` runs once per trained model, after training and before anything looks at the test
split (``compare`` calls it right after each model is trained; ``image-classifier train`` and
:func:`image_classifier.train` through :func:`train_and_fit`). It predicts the validation images
once and fits, on those predictions:

1. **calibration**: one temperature (two for a face model: the face head's and the fallback
   network's) minimising the validation NLL, card key ``calibration``;
2. **rejection** ("none of these"): card key ``rejection``, the rule of
   :mod:`image_classifier.inference.rejection` on the calibrated validation probabilities
   (:mod:`.rejection`).

The card is rewritten atomically; the weights are untouched (an exported ONNX file whose
temperature no longer matches the card is refused when opened, saying to re-export).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from image_classifier.card import Calibration, read_card, write_card
from image_classifier.data.split import load_split
from image_classifier.errors import DatasetError
from image_classifier.faces import FaceCache
from image_classifier.inference.calibration import log_probabilities, softmax
from image_classifier.inference.kinds import open_classifier
from image_classifier.inference.model import Model
from image_classifier.inference.rejection import DEFAULT_KEEP, RejectionRule
from image_classifier.runs import SPLIT_NAME
from image_classifier.training import TrainOptions, TrainResult, default_cache_dir, train_folder
from image_classifier.trust.rejection import rejection_entry as rule_entry
from image_classifier.trust.temperature import MIN_IMAGES, calibrate, ece, nll

log = logging.getLogger(__name__)


@dataclass
class ValidationPredictions:
    """The model's answers on the validation images that decoded, predicted once and shared by
    every fit of this module."""

    classifier: Model  # as loaded before this step (its card's temperatures, if any)
    labels: np.ndarray  # (n,) column index of each image's true class
    logprobs: np.ndarray  # (n, C) uncalibrated log-probabilities (the logits up to a row constant)
    details: list[dict[str, Any]]  # per image what answered (predict_details)
    kept: list[int]  # which of the given items these are
    calibrated: np.ndarray | None = None  # (n, C) with the fitted temperatures, once fitted


@dataclass
class TrustFit:
    """What :func:`fit_trust` wrote into the card."""

    calibration: Calibration
    rejection: dict[str, Any] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One progress line, e.g. ``temperature 1.84 on 66 validation images (NLL 0.41 -> 0.27)``."""
        c = self.calibration
        text = f"temperature {c.temperature:.2f}"
        for part, temperature in c.part_temperatures().items():  # a part's own, e.g. the face head's
            text += f" ({part} head {temperature:.2f})"
        text += f" on {c.images} validation images"
        if c.nll_before is not None:
            text += (f" (NLL {c.nll_before:.2f} -> {c.nll_after:.2f}, "
                     f"ECE {c.ece_before:.3f} -> {c.ece_after:.3f})")
        if self.notes:
            text += "; " + "; ".join(self.notes)
        return f"{text}, in {self.seconds:.1f} s"


def predict_validation(classifier: Model, val_items: Sequence[Any], *, cache: Any = None
                       ) -> ValidationPredictions:
    """One pass over ``val_items`` (objects with ``path`` and ``class_name``: split records or
    ``LabelledImage``). ``cache`` is anything with ``get(path, classifier)`` returning a decoded
    image (``evaluate.evaluation.DecodeCache``), so a run decodes each file once per input size."""
    index = {name: i for i, name in enumerate(classifier.classes)}
    unknown = sorted({str(it.class_name) for it in val_items if str(it.class_name) not in index})
    if unknown:
        raise DatasetError(f"the validation images have classes the model does not know: {', '.join(unknown)}")
    probs, details, decoded = classifier.predict_paths(val_items, cache, what="validation image")
    labels = np.array([index[str(val_items[i].class_name)] for i in decoded.kept], dtype=np.int64)
    if not details:
        return ValidationPredictions(classifier, labels, probs, [], [])
    # Undo whatever temperatures the card has now: fitting starts from the network's own logits.
    temps = classifier.temperatures(details, len(probs))
    logprobs = temps[:, None] * log_probabilities(probs)
    return ValidationPredictions(classifier, labels, logprobs, list(details), list(decoded.kept))


def fit_calibration(preds: ValidationPredictions) -> tuple[Calibration, list[str]]:
    """The card's ``calibration`` entry (and notes for the progress line), fitted on ``preds``;
    sets ``preds.calibrated``."""
    temperatures, temps, notes, counts = preds.classifier.fit_temperatures(
        preds.logprobs, preds.labels, preds.details, calibrate)
    n = len(preds.labels)
    preds.calibrated = softmax(preds.logprobs / temps[:, None]) if n else np.empty_like(preds.logprobs)
    before = softmax(preds.logprobs) if n else preds.logprobs
    entry = Calibration(
        **temperatures,  # this kind's temperature(s): the network's, and a part's own (a face model's face head)
        images=n,
        nll_before=nll(preds.logprobs, preds.labels) if n else None,
        nll_after=nll(preds.logprobs / temps[:, None], preds.labels) if n else None,
        ece_before=ece(before, preds.labels) if n else None,
        ece_after=ece(preds.calibrated, preds.labels) if n else None,
        **counts,  # the images each part answered, where a kind has parts
        notes=notes or None,  # the same list: notes added below (the rule's) reach the card when there are some
        min_images=MIN_IMAGES)
    return entry, notes


def fit_trust(model_dir: str | os.PathLike, val_items: Sequence[Any], *, keep: float = DEFAULT_KEEP, reject: bool = True,
              cache: Any = None, face_cache: FaceCache | None = None) -> TrustFit:
    """Fit calibration (and rejection) of the saved model in ``model_dir`` on ``val_items`` (its
    validation split: split records or ``LabelledImage``), write them into its card, and return
    what was written. ``keep`` is the share of known validation images the rejection rule keeps;
    ``reject=False`` fits no rejection rule. ``cache``: a ``DecodeCache``; ``face_cache``: where a
    face model finds each file's faces."""
    t0 = time.perf_counter()
    model_dir = Path(model_dir)
    classifier = open_classifier(model_dir, "torch", face_cache=face_cache)
    preds = predict_validation(classifier, list(val_items), cache=cache)
    calibration, notes = fit_calibration(preds)

    # ---- rejection ("none of these"): the rule on the same pass's calibrated probabilities (its
    # threshold is on what the loaded model will serve), keeping ``keep`` of the validation images.
    rejection: dict[str, Any] | None = None
    if reject and len(preds.details):
        rejection = rule_entry(classifier, preds.calibrated, preds.details, keep,
                               card=classifier.card.with_(calibration=calibration))
        notes.append(f"none of these: {RejectionRule.from_card(rejection).describe()}")  # type: ignore[union-attr]

    card = read_card(model_dir)
    card.calibration = calibration
    card.remove("rejection")  # a rule fitted on other probabilities is stale
    if rejection is not None:
        card.rejection = rejection
    write_card(model_dir, card)
    fit = TrustFit(calibration, rejection, time.perf_counter() - t0, notes)
    log.debug("%s: %s", model_dir, fit.line())
    return fit


def split_of_trained(model_dir: Path, options: TrainOptions) -> Path:
    """The split manifest a ``train_folder`` run trained on: the copy it keeps beside the model,
    else the one it was given."""
    own = model_dir / SPLIT_NAME
    return own if own.is_file() or options.split is None else Path(options.split)


def train_and_fit(data: str | os.PathLike, options: TrainOptions, *, args: dict[str, Any] | None = None
                  ) -> tuple[TrainResult, TrustFit | None]:
    """``train_folder`` then :func:`fit_trust` on the split's validation images: what
    ``image-classifier train`` and :func:`image_classifier.train` run. In a distributed job the
    processes other than rank 0 return after training, with no fit (rank 0 fits and writes)."""
    result = train_folder(data, options, args=args)
    if not result.is_main:
        return result, None
    model_dir = Path(result.model_dir)
    split = load_split(split_of_trained(model_dir, options), data)
    # The face cache training filled (a face model's validation faces are found again for free).
    face_cache = FaceCache((options.cache_dir or default_cache_dir()) if options.cache else None)
    fit = fit_trust(model_dir, split.subset("val"), keep=options.keep, face_cache=face_cache)
    result.card = read_card(model_dir)
    return result, fit

