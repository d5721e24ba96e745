"""Fitting a model's "none of these" rule on its validation split and storing it in the card.

The rule itself (score kinds, threshold, p-values) is :mod:`image_classifier.inference.rejection`;
this module runs the one validation pass that feeds it. The probabilities must be the ones the
loaded model serves (calibrated, once the card has a temperature), since the threshold is on them:
fit the temperature first, then the rule.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from image_classifier.card import ModelCard, read_card, write_card
from image_classifier.errors import DatasetError
from image_classifier.inference.model import Model
from image_classifier.inference.rejection import DEFAULT_KEEP, RULE_VERSION, MEMBER_P_VALUE, RejectionRule

log = logging.getLogger(__name__)


def rejection_entry(classifier: Model, probabilities: np.ndarray, details: Sequence[dict[str, Any]],
                    keep: float = DEFAULT_KEEP, card: ModelCard | None = None) -> dict[str, Any]:
    """The card entry of the rule fitted on these validation predictions (one pass, shared with
    calibration): ``probabilities`` as the model serves them with ``card``'s calibration (default:
    the classifier's card); the rule scores them with the temperature taken out, as
    :meth:`Classifier.judge` does, in the precision the model serves (float32), so that a
    validation image scores the same when predicted again."""
    probs = classifier.uncalibrated(np.asarray(probabilities, dtype=np.float32), details, card)
    return classifier.fit_rejection_rule(probs, details, keep).to_card()


def store_rejection(model_dir: str | os.PathLike, entry: dict[str, Any] | None) -> ModelCard:
    """Write ``entry`` as the card's ``rejection`` (None removes it); returns the new card. The
    weights are not touched, so the card's weights hash stays valid."""
    card = read_card(model_dir)
    if entry is None:
        card.remove("rejection")
    else:
        card.rejection = entry
    write_card(model_dir, card)
    return card


def needs_rejection(card: ModelCard, keep: float) -> bool:
    """True when the card has no rule, one fitted for another ``keep``, or one fitted another way
    (:data:`~image_classifier.inference.rejection.RULE_VERSION`). (A refitted temperature does not
    stale it: the rule scores the probabilities with the temperature taken out.)"""
    entry = card.rejection or {}
    return (not entry or abs(float(entry.get("keep", -1)) - keep) > 1e-12
            or int(entry.get("version", 1)) != RULE_VERSION)


# ---- an ensemble's rule ------------------------------------------------------------------------

def fit_ensemble_rejection(ensemble: Model, val_items: Sequence[Any], keep: float = DEFAULT_KEEP,
                           cache: Any = None) -> dict[str, Any] | None:
    """Fit and store the rule of a saved ensemble (an ``EnsembleClassifier`` opened from its
    directory) on ``val_items``, its members' validation split: one pass of the ensemble (decoding
    shared through ``cache``), each image scored by its smallest member p-value
    (:data:`~image_classifier.inference.rejection.MEMBER_P_VALUE`), thresholded on the p-value scale
    so that ``keep`` of these images are kept. The ensemble applies the rule from then on; returns
    the entry (without a rule on any member the ensemble gets none and never rejects: None)."""
    t0 = time.perf_counter()
    probs, details, _ = ensemble.predict_paths(val_items, cache)
    if not details:
        raise DatasetError("none of the validation images could be decoded: no rejection rule can be fitted")
    if any(d.get(MEMBER_P_VALUE) is None for d in details):
        log.info("ensemble: no member has a rejection rule, so the ensemble gets none")
        return None
    entry = rejection_entry(ensemble, probs, details, keep)
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    if ensemble.model_dir is not None:
        ensemble.card = store_rejection(ensemble.model_dir, entry)
    else:
        ensemble.card = ensemble.card.with_(rejection=entry)
    log.info("%s: rejection rule on %d validation images: %s", ensemble.arch, entry["images"],
             RejectionRule.from_card(entry).describe())  # type: ignore[union-attr]
    return entry
