"""Metric functions against scikit-learn / scipy on known inputs, plus edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn import metrics as skm

from image_classifier.evaluate import metrics as m


def _random_case(seed: int, n: int = 80, c: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.0  # better than chance, but with mistakes
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed):
    y, probs = _random_case(seed)
    pred = probs.argmax(1)
    c = probs.shape[1]
    assert m.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert m.macro_f1(y, pred, c) == pytest.approx(
        skm.f1_score(y, pred, average="macro", zero_division=0)
    )
    np.testing.assert_array_equal(
        m.confusion_matrix(y, pred, c), skm.confusion_matrix(y, pred, labels=list(range(c)))
    )
    p, r, f, s = skm.precision_recall_fscore_support(
        y, pred, labels=list(range(c)), zero_division=0
    )
    scores = m.per_class_scores(m.confusion_matrix(y, pred, c))
    np.testing.assert_allclose(scores.precision, p)
    np.testing.assert_allclose(scores.recall, r)
    np.testing.assert_allclose(scores.f1, f)
    np.testing.assert_array_equal(scores.support, s)
    assert m.log_loss(y, probs) == pytest.approx(skm.log_loss(y, probs, labels=list(range(c))))


def test_class_absent_from_y_true():
    # Class 2 never occurs in y_true but is predicted once; class 3 occurs nowhere.
    y = np.array([0, 0, 1, 1, 1])
    pred = np.array([0, 2, 1, 1, 0])
    probs = np.eye(4)[pred] * 0.7 + 0.075
    assert m.macro_f1(y, pred, 4) == pytest.approx(
        skm.f1_score(y, pred, average="macro", zero_division=0)
    )
    out = m.compute_metrics(y, probs, ["a", "b", "c", "d"])
    cm = np.array(out["confusion_matrix"])
    assert cm.shape == (4, 4)
    assert cm.sum() == 5
    assert out["per_class"][2]["support"] == 0
    assert out["per_class"][2]["precision"] == 0.0
    assert out["per_class"][3] == {"class": "d", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_perfect_predictions():
    y = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[y]
    out = m.compute_metrics(y, probs, ["x", "y", "z"])
    assert out["accuracy"] == 1.0
    # 6 of 6 right: the accuracy could still be 61 % (Wilson); a bootstrap said [1, 1].
    assert out["accuracy_ci"][1] == 1.0 and out["accuracy_ci"][0] == pytest.approx(1 / (1 + 1.959964 ** 2 / 6))
    assert out["macro_f1"] == 1.0
    assert out["log_loss"] == pytest.approx(0.0, abs=1e-12)
    assert out["ece"] == pytest.approx(0.0, abs=1e-12)
    assert np.trace(out["confusion_matrix"]) == 6


def test_single_sample():
    out = m.compute_metrics(np.array([1]), np.array([[0.2, 0.8]]), ["a", "b"])
    assert out["n"] == 1
    assert out["accuracy"] == 1.0
    assert out["accuracy_ci"][0] == pytest.approx(0.2065, abs=1e-4) and out["accuracy_ci"][1] == 1.0
    assert out["log_loss"] == pytest.approx(-math.log(0.8))
    assert out["ece"] == pytest.approx(0.2)


def test_log_loss_clips_zero_probability():
    y = np.array([0, 1])
    probs = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert m.log_loss(y, probs) == pytest.approx(-math.log(m.LOG_LOSS_EPS) / 2)


def test_ece_known_values():
    # Two bins used: conf 0.9 (4 images, 3 right) and conf 0.6 (2 images, 0 right).
    y = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    expected = 4 / 6 * abs(3 / 4 - 0.9) + 2 / 6 * abs(0.0 - 0.6)
    assert m.expected_calibration_error(y, probs) == pytest.approx(expected)
    bins = m.reliability_bins(y, probs)
    assert [b["count"] for b in bins] == [2, 4]
    # A confidence of exactly 1.0 falls in the last bin (bins are right-closed), not past it.
    assert m.expected_calibration_error(np.array([0]), np.array([[1.0, 0.0]])) == 0.0


def test_ece_matches_independent_implementation():
    y, probs = _random_case(5, n=200, c=3)
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    assert m.expected_calibration_error(y, probs) == pytest.approx(ece)


@pytest.mark.parametrize(("right", "n", "low", "high"), [
    (64, 66, 0.8961, 0.9917),  # the athletes' test split at 0.970
    (20, 20, 0.8389, 1.0),  # a perfect score keeps its uncertainty
    (0, 20, 0.0, 0.1611),
    (1, 2, 0.0945, 0.9055),
])
def test_the_accuracy_interval_is_wilsons(right, n, low, high):
    y = np.zeros(n, dtype=np.int64)
    pred = np.where(np.arange(n) < right, 0, 1)
    a = m.accuracy_ci(y, pred)
    assert a == pytest.approx((low, high), abs=1e-4)
    assert a[0] <= m.accuracy(y, pred) <= a[1]
    with pytest.raises(ValueError, match="no samples"):
        m.accuracy_ci(np.array([]), np.array([]))


def test_the_accuracy_interval_holds_the_accuracy_exactly_at_every_count():
    # A perfect score's upper end is 1.0 itself, not a rounding error below it (the summary plot's
    # error bar refused 13 of 13 and 84 of 84).
    for n in range(1, 120):
        y = np.zeros(n, dtype=np.int64)
        for right in range(n + 1):
            low, high = m.accuracy_ci(y, np.where(np.arange(n) < right, 0, 1))
            assert 0.0 <= low <= right / n <= high <= 1.0, (right, n)


@pytest.mark.parametrize(
    "ca, cb",
    [
        ([1, 1, 1, 0, 1, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0, 1, 0, 1]),
        ([1] * 30 + [0] * 5, [1] * 20 + [0] * 15),
        ([1, 0, 1], [1, 0, 1]),
    ],
)
def test_mcnemar_against_scipy(ca, cb):
    ca = np.array(ca, dtype=bool)
    cb = np.array(cb, dtype=bool)
    res = m.mcnemar_exact(ca, cb)
    assert res.b == int(np.sum(ca & ~cb))
    assert res.c == int(np.sum(~ca & cb))
    if res.b + res.c == 0:
        assert res.p_value == 1.0
    else:
        expected = binomtest(res.b, res.b + res.c, 0.5).pvalue
        assert res.p_value == pytest.approx(expected)


def test_mcnemar_symmetric():
    ca = np.array([1, 1, 0, 1, 0, 1, 1], dtype=bool)
    cb = np.array([0, 1, 1, 0, 0, 0, 1], dtype=bool)
    ab, ba = m.mcnemar_exact(ca, cb), m.mcnemar_exact(cb, ca)
    assert (ab.b, ab.c) == (ba.c, ba.b)
    assert ab.p_value == ba.p_value


def test_compute_metrics_rejects_bad_input():
    with pytest.raises(ValueError):
        m.compute_metrics(np.array([0, 3]), np.full((2, 3), 1 / 3), ["a", "b", "c"])
    with pytest.raises(ValueError):
        m.compute_metrics(np.array([0]), np.full((1, 3), 1 / 3), ["a", "b"])
    with pytest.raises(ValueError):
        m.compute_metrics(np.array([], dtype=int), np.zeros((0, 3)), ["a", "b", "c"])
