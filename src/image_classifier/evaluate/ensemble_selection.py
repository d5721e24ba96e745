"""The weights of an ensemble: the mix of the models' probabilities with the lowest log-loss on the
images given (numpy only).

The log-loss of a weighted average of probabilities is convex in the weights, so the best weights
on the simplex are found exactly (:func:`optimal_weights`) by the EM updates for mixture weights:
each weight is multiplied by its model's mean share of the mixed probability of the true class.
The updates never increase the log-loss and need no step size. A weight under
:data:`MIN_WEIGHT` is dropped (its model is not opened when the ensemble predicts).

Greedy forward selection (Caruana et al. 2004), used before, starts from one model and can only
step to a weight of 1/2 for the second: on a few dozen validation images, a complementary model
worth 1/3 was often never added. The optimum has no such blind spot.

A mix's validation accuracy is optimistic on the images its weights were fitted to;
:func:`cross_fitted` scores each image with weights fitted on the other folds' images. Only the
probabilities handed in decide: ``compare`` passes the validation split's.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from image_classifier.evaluate.metrics import LOG_LOSS_EPS, accuracy, log_loss, predictions

#: A weight below this is dropped and the others renormalised.
MIN_WEIGHT = 0.01
#: EM iterations at most, and the log-loss change under which they stop.
MAX_ITERATIONS = 2000
TOLERANCE = 1e-10
#: Folds of :func:`cross_fitted`.
FOLDS = 5


@dataclass
class Mix:
    """The weights :func:`optimal_weights` found, and how the mix compares with the best single model."""

    weights: dict[str, float]  # every candidate, in the order given; 0.0 for a model left out
    log_loss: float  # of the weighted average, on the probabilities given
    accuracy: float
    best_single: str  # the candidate with the lowest log-loss on its own
    best_single_log_loss: float
    best_single_accuracy: float
    iterations: int

    @property
    def members(self) -> list[str]:
        """The models with a weight above 0, in the order given."""
        return [n for n, w in self.weights.items() if w > 0]


def optimal_weights(probs: Mapping[str, np.ndarray], y: np.ndarray) -> Mix:
    """The weights on the simplex that minimise the log-loss of the mixed ``probs``
    (``{name: (n, classes)}``, rows aligned with the true class indices ``y``)."""
    names = list(probs)
    if not names:
        raise ValueError("no model to mix")
    y = np.asarray(y, dtype=np.int64)
    arrays = {n: np.asarray(probs[n], dtype=np.float64) for n in names}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or next(iter(shapes))[0] != len(y):
        raise ValueError(f"probabilities must all have shape (len(y), classes); got {sorted(shapes)} for {len(y)} labels")
    truth = np.clip(np.stack([arrays[n][np.arange(len(y)), y] for n in names], axis=1), LOG_LOSS_EPS, 1.0)  # (n, models)
    w = np.full(len(names), 1.0 / len(names))
    previous, iterations = math.inf, 0
    for iterations in range(1, MAX_ITERATIONS + 1):
        mixed = truth @ w
        loss = float(-np.mean(np.log(mixed)))
        if previous - loss < TOLERANCE:
            break
        previous = loss
        w = w * (truth / mixed[:, None]).mean(axis=0)
        w = w / w.sum()
    w = np.where(w < MIN_WEIGHT, 0.0, w)
    w = w / w.sum()
    weights = {n: float(v) for n, v in zip(names, w)}
    singles = {n: log_loss(y, arrays[n]) for n in names}
    best = min(names, key=lambda n: (singles[n], names.index(n)))
    mixed_probs = mix(arrays, weights)
    return Mix(weights, log_loss(y, mixed_probs), accuracy(y, predictions(mixed_probs)), best, singles[best],
               accuracy(y, predictions(arrays[best])), iterations)


def cross_fitted(probs: Mapping[str, np.ndarray], y: np.ndarray, *, folds: int = FOLDS, seed: int = 0
                 ) -> tuple[Mix, np.ndarray]:
    """The optimal weights on all the images, and every image's mixed probabilities with weights
    fitted on the other folds' images only (stratified folds, dealt in a seeded order)."""
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    dealt = 0
    for c in np.unique(y):
        # Dealt on from where the last class stopped, as scikit-learn's StratifiedKFold deals: a
        # class with fewer images than folds (one validation photo a person) must not put every
        # class's first image in fold 0, which would leave that fold nothing to fit on.
        idx = np.flatnonzero(y == c)
        fold[rng.permutation(idx)] = (dealt + np.arange(len(idx))) % folds
        dealt += len(idx)
    arrays = {n: np.asarray(p, dtype=np.float64) for n, p in probs.items()}
    out = np.zeros_like(next(iter(arrays.values())))
    for k in range(folds):
        test = fold == k
        if test.any():
            inner = optimal_weights({n: p[~test] for n, p in arrays.items()}, y[~test])
            out[test] = mix({n: p[test] for n, p in arrays.items()}, inner.weights)
    return optimal_weights(arrays, y), out


def mix(probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The weighted average of ``probs`` (weights summing to 1; names with weight 0 may be absent)."""
    out = None
    for name, w in weights.items():
        if w <= 0:
            continue
        part = w * np.asarray(probs[name], dtype=np.float64)
        out = part if out is None else out + part
    if out is None:
        raise ValueError("no model has a weight above 0")
    return out
