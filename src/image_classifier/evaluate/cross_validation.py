"""Out-of-fold predictions over the training and validation images, for the models that can be
refitted in seconds: what :mod:`image_classifier.evaluate.choice` weighs besides the validation split.

* **Folds** (:func:`repeated_folds`): R repeats of stratified K-fold over train + validation (5 x 2
  by default, Dietterich's design for comparing classifiers), every duplicate group inside one
  fold, each repeat shuffled from ``(seed, repeat)``. The test split is not among the images.
* **A head on frozen features** (:func:`linear_probe_oof`): a multinomial logistic regression on
  the standardised output of a frozen ImageNet backbone, refitted per fold. It stands for a
  transfer model's frozen phase (the fine-tuned network itself takes minutes to train): the
  estimate is that of the model's frozen part and a linear head, and the report says so.
* **The face model** (:func:`face_model_oof`): per fold, the bank of the training part's labelled
  faces and the face head (logistic regression, the L2 strength the model chose) are refitted, and
  the model's own rule decides which face answers (the largest within its ``max_distance`` of the
  bank; beyond its ``alone_within``, together with the fallback); where none does, the fallback's
  out-of-fold probabilities answer.

Every function takes and returns plain arrays: ``probs`` of shape (repeats, images, classes).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from image_classifier.evaluate.choice import CrossValidated
from image_classifier.evaluate.metrics import true_class_nll
from image_classifier.inference.calibration import softmax
from image_classifier.models.face_embedding import FaceHead, face_answers
from image_classifier.training.face_head import fit_linear_head, labelled_faces

#: Repeats and folds of the cross-validation (5 x 2: Dietterich 1998).
REPEATS = 5
FOLDS = 2
#: Inverse L2 strength of the linear head on standardised frozen features (a linear probe with a
#: few hundred images and 1,000-2,000 features needs strong regularisation).
PROBE_C = 0.05


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


def _repeats(folds: Sequence[Fold]) -> int:
    return max(f.repeat for f in folds) + 1


def _standardised_lr(x: np.ndarray, y: np.ndarray, num_classes: int, c: float
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
    out = np.zeros((_repeats(folds), len(y), num_classes))
    for f in folds:
        w, b, mean, scale = _standardised_lr(x[f.train], y[f.train], num_classes, c)
        out[f.repeat, f.test] = softmax(((x[f.test] - mean) / scale) @ w.T + b)
    return out


def face_model_oof(analyses: Sequence[Any], labels: Sequence[int], folds: Sequence[Fold], num_classes: int,
                   fallback: np.ndarray, *, c: float, max_distance: float,
                   alone_within: float = float("inf")) -> np.ndarray:
    """Out-of-fold answers of a face model (see the module docstring). ``analyses``: per image what
    the face pipeline found (a :class:`~image_classifier.faces.FaceAnalysis`, or None); ``fallback``:
    the fallback's out-of-fold probabilities (repeats, images, classes) for the images no face answers,
    and beside the face that decides where it is further than ``alone_within`` from the bank.
    Returns the out-of-fold probabilities (repeats, images, classes)."""
    y = np.asarray(labels, dtype=np.int64)
    probs = np.array(fallback, dtype=np.float64, copy=True)
    descriptors = [None if a is None else a.descriptors for a in analyses]
    for f in folds:
        chosen = labelled_faces([analyses[i] for i in f.train], y[f.train])
        rows = [(i, k) for i, k in zip(f.train, chosen) if k is not None]
        if len({int(y[i]) for i, _ in rows}) < 2:
            continue  # too few labelled faces in this part: the fallback answers every image
        bank = np.stack([descriptors[i][k] for i, k in rows]).astype(np.float64)  # type: ignore[index]
        w, b, mean, scale = _standardised_lr(bank, y[[i for i, _ in rows]], num_classes, c)
        head = FaceHead(w, b, mean, scale, bank, max_distance)
        for i in f.test:
            face, distance = head.choose(descriptors[i])
            if face is not None:
                own = head.probabilities(np.asarray(descriptors[i])[face:face + 1])
                probs[f.repeat, i] = face_answers(own, np.array([distance]), probs[f.repeat, i][None],
                                                  alone_within)[0]
    return probs


def summarise(probs: np.ndarray, labels: Sequence[int], folds: Sequence[Fold], method: str) -> CrossValidated:
    """Per-image and per-fold accuracy and log-loss of out-of-fold ``probs`` (repeats, images, classes)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    right = p.argmax(axis=2) == y[None, :]
    nll = true_class_nll(y, p)  # (repeats, images)
    fold_acc = np.array([right[f.repeat, f.test].mean() for f in folds])
    fold_loss = np.array([nll[f.repeat, f.test].mean() for f in folds])
    return CrossValidated(right.mean(axis=0), nll.mean(axis=0), fold_acc, fold_loss, _repeats(folds),
                          len(folds) // _repeats(folds), method)
