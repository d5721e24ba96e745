"""Classification metrics as pure numpy functions.

Every function takes integer labels ``y_true`` (shape ``[n]``, values in ``0..C-1``) and either the
predicted labels or the predicted probabilities ``probs`` (shape ``[n, C]``). The class count ``C``
always comes from ``probs`` (or is passed), never from the labels seen, so a class that happens to
be absent from a small test split still gets its row in the confusion matrix and per-class table.

Why not call scikit-learn here: these functions run inside the serving and reporting paths, where
we want exact control over edge cases (n=1, absent classes, 0/0) and JSON-ready output. The tests
check each one against scikit-learn on known inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

from image_classifier.trust.temperature import ece

#: Probabilities are clipped to [LOG_LOSS_EPS, 1] before the log, so one confident mistake costs
#: about 34.5 nats instead of infinity.
LOG_LOSS_EPS = 1e-15


def _check(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D [n, classes], got shape {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has shape {y.shape}, expected ({p.shape[0]},)")
    if y.size == 0:
        raise ValueError("no samples to evaluate")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("y_true must hold integer class indices")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true holds labels outside 0..{p.shape[1] - 1}")
    return y.astype(np.int64), p


def predictions(probs: np.ndarray) -> np.ndarray:
    """Top-1 predicted labels (ties go to the lower class index, like ``argmax``)."""
    return np.asarray(probs).argmax(axis=1).astype(np.int64)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("no samples to evaluate")
    return float(np.mean(y_true == y_pred))


def accuracy_ci(y_true: np.ndarray, y_pred: np.ndarray, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for accuracy (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it
    for a proportion). Not a percentile bootstrap: resampling a perfect score gives a perfect score
    every time, so a bootstrap said "100 %-100 %" for 20 right answers of 20, where the accuracy
    could well be 85 %; Wilson's interval for it is [0.839, 1]. It also covers 95 % on small test
    splits, where a bootstrap interval is too narrow."""
    correct = np.asarray(y_true) == np.asarray(y_pred)
    n = correct.size
    if n == 0:
        raise ValueError("no samples to evaluate")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = float(correct.mean())
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # The interval holds p exactly; in floating point its end at a perfect (or zero) score can land
    # a rounding error inside it (0.9999999999999999 for 13 of 13), which a plot's error bar refuses.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of images of true class ``i`` predicted as class ``j``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


@dataclass(frozen=True)
class PerClass:
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


def per_class_scores(cm: np.ndarray) -> PerClass:
    """Precision, recall, F1 and support per class from a confusion matrix.

    0/0 is reported as 0 (scikit-learn's ``zero_division=0``): a class never predicted has
    precision 0, a class with no test images has recall 0. ``support`` tells the reader which.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return PerClass(precision, recall, f1, support.astype(np.int64))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 over the classes that occur in ``y_true`` or ``y_pred``.

    A class absent from both has no defined F1 and is left out (as scikit-learn does with its
    default ``labels``), so a tiny test split that lacks a class is not scored as a failure on it.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    scores = per_class_scores(cm)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(scores.f1[present].mean())


def true_class_nll(y_true: np.ndarray, probs: np.ndarray, *, eps: float = LOG_LOSS_EPS) -> np.ndarray:
    """Each image's negative log-probability of its true class (natural log, probabilities clipped);
    ``probs`` is [n, classes], or [..., n, classes] (e.g. one row of images per repeat of folds)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    return -np.log(np.clip(p[..., np.arange(y.size), y], eps, 1.0))


def log_loss(y_true: np.ndarray, probs: np.ndarray, *, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log-probability of the true class (natural log, probabilities clipped)."""
    y, p = _check(y_true, probs)
    return float(np.mean(true_class_nll(y, p, eps=eps)))


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, *, n_bins: int = 15
) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al., 2017).

    Bins are ``(k/n_bins, (k+1)/n_bins]``; each bin contributes ``|accuracy - mean confidence|``
    weighted by its share of images. 0 means the confidences can be read as probabilities.
    """
    y, p = _check(y_true, probs)
    return ece(p, y, n_bins)  # the same right-closed bins as reliability_bins


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, *, n_bins: int = 15) -> list[dict]:
    """The per-bin numbers behind the ECE (for a reliability diagram); empty bins are omitted."""
    y, p = _check(y_true, probs)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # Right-closed bins: a confidence of exactly 1/15 belongs to the first bin, 1.0 to the last.
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            out.append(
                {
                    "low": b / n_bins,
                    "high": (b + 1) / n_bins,
                    "count": int(mask.sum()),
                    "accuracy": float(correct[mask].mean()),
                    "confidence": float(confidence[mask].mean()),
                }
            )
    return out


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test between two classifiers scored on the same images.

    ``b``: images model A got right and model B got wrong; ``c``: the reverse. Only these
    discordant images carry information about which model is better.
    """

    b: int
    c: int
    p_value: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """Two-sided exact (binomial) McNemar test on per-image correctness.

    Under the null hypothesis (both models equally accurate) each discordant image is a fair coin
    flip, so ``min(b, c)`` is Binomial(b + c, 1/2); the p-value doubles its lower tail (capped at 1).
    The exact form is used because with ~65 test images b + c is small and the chi-squared
    approximation is poor.
    """
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape:
        raise ValueError("both models must be scored on the same images")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0)
    k = min(b, c)
    # Exact integer arithmetic: sum of C(n, i) for i <= k, over 2^n.
    tail = sum(math.comb(n, i) for i in range(k + 1))
    p = min(1.0, 2.0 * tail / 2**n)
    return McNemarResult(b, c, float(p))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, kept monotone), in the order given.

    Comparing 4 models makes 6 pairwise tests; at p < 0.05 each, one false "significant" result
    among them is not unlikely, and the adjusted values account for that.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def pairwise_mcnemar(correct: dict[str, np.ndarray], *, alpha: float = 0.05) -> list[dict]:
    """Exact McNemar test for every pair of models (in insertion order), JSON-ready.

    ``correct``: model name -> boolean per-image correctness on the same test images, same order.
    Each entry: ``model_a``, ``model_b``, ``a_only_correct`` (b), ``b_only_correct`` (c),
    ``p_value``, ``p_holm`` (Holm-adjusted over all pairs), ``significant`` (``p_value < alpha``).
    """
    names = list(correct)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            res = mcnemar_exact(correct[a], correct[b])
            out.append({"model_a": a, "model_b": b, "a_only_correct": res.b, "b_only_correct": res.c,
                        "p_value": res.p_value})
    for entry, adj in zip(out, holm_adjust([e["p_value"] for e in out])):
        entry["p_holm"] = adj
        entry["significant"] = entry["p_value"] < alpha
    return out


def compute_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    *,
    ece_bins: int = 15,
) -> dict:
    """All the test-set numbers the report shows, as a JSON-ready dict.

    Keys: ``n``, ``accuracy``, ``accuracy_ci`` ([low, high], 95 % Wilson score interval),
    ``macro_f1``, ``log_loss``, ``ece``, ``per_class`` (list of {class, precision, recall, f1,
    support}), ``confusion_matrix`` (rows = true class, columns = predicted, in ``classes`` order),
    ``classes``, ``reliability`` (ECE bins).
    """
    y, p = _check(y_true, probs)
    if len(class_names) != p.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {p.shape[1]} probability columns")
    num_classes = p.shape[1]
    y_pred = predictions(p)
    cm = confusion_matrix(y, y_pred, num_classes)
    scores = per_class_scores(cm)
    low, high = accuracy_ci(y, y_pred)
    return {
        "n": int(y.size),
        "classes": list(class_names),
        "accuracy": accuracy(y, y_pred),
        "accuracy_ci": [low, high],
        "accuracy_ci_level": 0.95,
        "macro_f1": macro_f1(y, y_pred, num_classes),
        "log_loss": log_loss(y, p),
        "ece": expected_calibration_error(y, p, n_bins=ece_bins),
        "per_class": [
            {
                "class": name,
                "precision": float(scores.precision[i]),
                "recall": float(scores.recall[i]),
                "f1": float(scores.f1[i]),
                "support": int(scores.support[i]),
            }
            for i, name in enumerate(class_names)
        ],
        "confusion_matrix": cm.tolist(),
        "reliability": reliability_bins(y, p, n_bins=ece_bins),
    }


def uncalibrated_metrics(y_true: np.ndarray, probs: np.ndarray, *, ece_bins: int = 15) -> dict:
    """Log-loss, ECE and reliability bins of the probabilities *before* calibration (the keys
    ``log_loss_uncalibrated``, ``ece_uncalibrated``, ``reliability_uncalibrated`` of the test
    metrics), to show what the temperature changed. Accuracy is the same: a temperature never
    changes the predicted class."""
    y, p = _check(y_true, probs)
    return {
        "log_loss_uncalibrated": log_loss(y, p),
        "ece_uncalibrated": expected_calibration_error(y, p, n_bins=ece_bins),
        "reliability_uncalibrated": reliability_bins(y, p, n_bins=ece_bins),
    }
