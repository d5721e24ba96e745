"""Repeated stratified k-fold over the training and validation images, and the linear heads
refitted in each fold: the evidence that chooses a face model's settings
(:mod:`image_classifier.training.face_head`) and that ``compare`` weighs besides the validation
split (:mod:`image_classifier.evaluate.cross_validation`).

* **Folds** (:func:`repeated_folds`): R repeats of stratified K-fold over train + validation (5 x 2
  by default, Dietterich's design for comparing classifiers), every duplicate group inside one
  fold, each repeat shuffled from ``(seed, repeat)``. The test split is not among the images.
* **A linear head** (:func:`fit_linear_head`): a multinomial logistic regression on standardised
  features (a face's descriptor, a frozen backbone's output).
* **A head on frozen features** (:func:`linear_probe_oof`): that head on the standardised output
  of a frozen ImageNet backbone, refitted per fold.

Every out-of-fold function returns ``probs`` of shape (repeats, images, classes). scikit-learn is
imported where it is used: answering (predict, sort, serve) loads the face head's module, which
imports this one, but never fits a head, and scikit-learn (with SciPy and pandas) is a second of
every command's start-up on a laptop CPU.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from image_classifier.models.face_embedding import softmax

#: Repeats and folds of the cross-validation (5 x 2: Dietterich 1998).
REPEATS = 5
FOLDS = 2
#: Inverse L2 strength of the linear head on standardised frozen features (a linear probe with a
#: few hundred images and 1,000-2,000 features needs strong regularisation).
PROBE_C = 0.05
#: Logit bias of a class absent from a head's training rows: it is never the head's answer.
ABSENT_CLASS_BIAS = -30.0


@dataclass(frozen=True)
class Fold:
    repeat: int
    index: int
    train: np.ndarray  # image indices
    test: np.ndarray


def repeated_folds(labels: Sequence[int], groups: Sequence[int], *, repeats: int = REPEATS, folds: int = FOLDS,
                   seed: int = 0) -> list[Fold]:
    """``repeats`` x ``folds`` stratified folds over the images; images of one duplicate group
    (``groups``: the split's group id, -1 for an image in no group) always fall in the same fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(labels, dtype=np.int64)
    g = np.asarray(groups, dtype=np.int64).copy()
    lone = g < 0
    g[lone] = g.max(initial=0) + 1 + np.arange(int(lone.sum()))  # a group of its own
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if smallest < folds:
        raise ValueError(f"cross-validation needs at least {folds} images of every class (the smallest has {smallest})")
    out = []
    for r in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed * 1000 + r)
        for k, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y, g)):
            out.append(Fold(r, k, np.asarray(train), np.asarray(test)))
    return out


def repeats_of(folds: Sequence[Fold]) -> int:
    return max(f.repeat for f in folds) + 1


def fit_linear_head(x: np.ndarray, y: np.ndarray, num_classes: int, c: float, mean: np.ndarray,
                    scale: np.ndarray, sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weight (C, d), bias (C,)) of a logistic regression on standardised features (descriptors);
    a class absent from ``y`` gets :data:`ABSENT_CLASS_BIAS` (``sample_weight``: each row's weight in
    the loss; default all 1)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    present = np.unique(y)
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.full(num_classes, ABSENT_CLASS_BIAS)
    # One BLAS thread: these products are small, and BLAS threads beside PyTorch's made the fits 13x
    # slower on 2 cores (a 12-person probe over 10 folds: 14.5 s against 1.1 s).
    with threadpool_limits(limits=1, user_api="blas"):
        lr = LogisticRegression(C=c, max_iter=5000, tol=1e-6).fit((x - mean) / scale, y, sample_weight=sample_weight)
    if len(present) == 2:  # sklearn returns one row for a binary problem: logit of the second class
        weight[present[1]] = lr.coef_[0]
        bias[present[0]], bias[present[1]] = 0.0, lr.intercept_[0]
    else:
        weight[lr.classes_] = lr.coef_
        bias[lr.classes_] = lr.intercept_
    return weight, bias


def standardised_lr(x: np.ndarray, y: np.ndarray, num_classes: int, c: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(weight (C, d), bias (C,), mean, scale) of a logistic regression on standardised ``x``;
    classes absent from ``y`` get a very low bias (never predicted)."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    weight, bias = fit_linear_head(x, y, num_classes, c, mean, scale)
    return weight, bias, mean, scale


def linear_probe_oof(features: np.ndarray, labels: Sequence[int], folds: Sequence[Fold], num_classes: int, *,
                     c: float = PROBE_C) -> np.ndarray:
    """Out-of-fold probabilities (repeats, images, classes) of a logistic regression on ``features``."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    out = np.zeros((repeats_of(folds), len(y), num_classes))
    for f in folds:
        w, b, mean, scale = standardised_lr(x[f.train], y[f.train], num_classes, c)
        out[f.repeat, f.test] = softmax(((x[f.test] - mean) / scale) @ w.T + b)
    return out
