"""Out-of-fold estimates over the training and validation images, for the models that can be
refitted in seconds: what :mod:`image_classifier.evaluate.choice` weighs besides the validation split.

The folds and the per-fold refits live with training, which chooses a face model's settings on the
same folds (:mod:`image_classifier.training.folds`, :func:`image_classifier.training.face_head.face_model_oof`):

* **A head on frozen features** (:func:`~image_classifier.training.folds.linear_probe_oof`) stands
  for a transfer model's frozen phase (the fine-tuned network itself takes minutes to train): the
  estimate is that of the model's frozen part and a linear head, and the report says so.
* **The face model**: per fold, the bank of the training part's labelled faces and the face head
  (logistic regression, the L2 strength the model chose) are refitted, and the model's own rule
  decides which face answers; where none does, the fallback's out-of-fold probabilities answer.

Here: :func:`summarise`, per image and per fold, of ``probs`` of shape (repeats, images, classes).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from image_classifier.evaluate.choice import CrossValidated
from image_classifier.evaluate.metrics import true_class_nll
from image_classifier.training.folds import Fold, repeats_of


def summarise(probs: np.ndarray, labels: Sequence[int], folds: Sequence[Fold], method: str) -> CrossValidated:
    """Per-image and per-fold accuracy and log-loss of out-of-fold ``probs`` (repeats, images, classes)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    right = p.argmax(axis=2) == y[None, :]
    nll = true_class_nll(y, p)  # (repeats, images)
    fold_acc = np.array([right[f.repeat, f.test].mean() for f in folds])
    fold_loss = np.array([nll[f.repeat, f.test].mean() for f in folds])
    return CrossValidated(right.mean(axis=0), nll.mean(axis=0), fold_acc, fold_loss, repeats_of(folds),
                          len(folds) // repeats_of(folds), method)
