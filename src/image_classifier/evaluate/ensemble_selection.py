"""Greedy ensemble selection (Caruana et al. 2004) on validation probabilities (numpy only).

Start from the best single model, then repeatedly add, *with replacement*, the model whose
addition most lowers the validation log-loss of the averaged probabilities; stop after
``max_steps`` additions or when no addition lowers it. A model's weight is how often it was
added over the number of additions, so the weights sum to 1 and a model never added has weight
0. Adding with replacement is what lets a strong model count twice against a weaker one that
only helps on a few images.

Only the probabilities handed in decide: ``compare`` passes the validation split's, so the
test split never takes part in the choice.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

#: Additions at most (Caruana's "handful of steps": with 2-5 models, weights in 1/20 steps).
DEFAULT_MAX_STEPS = 20
#: An addition must lower the log-loss by more than this to count as an improvement (float noise).
MIN_IMPROVEMENT = 1e-9
_EPS = 1e-15


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-probability of the true class (clipped away from 0)."""
    p = np.clip(np.asarray(probs, dtype=np.float64)[np.arange(len(y)), y], _EPS, 1.0)
    return float(-np.mean(np.log(p)))


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(probs).argmax(axis=1) == y)) if len(y) else float("nan")


@dataclass
class EnsembleSelection:
    """What the greedy selection chose, and how it compares with the best single model."""

    weights: dict[str, float]  # every candidate, in the order given; 0.0 for a model never added
    counts: dict[str, int]
    steps: int  # additions made (including the first model)
    log_loss: float  # of the weighted average, on the probabilities given
    accuracy: float
    best_single: str  # the candidate with the lowest log-loss on its own
    best_single_log_loss: float
    best_single_accuracy: float
    #: Log-loss after each addition (the first entry is the best single model's).
    history: list[float] = field(default_factory=list)

    @property
    def members(self) -> list[str]:
        """The models with a weight above 0, in the order given."""
        return [n for n, w in self.weights.items() if w > 0]

    @property
    def improves(self) -> bool:
        """An ensemble worth keeping: two models or more, and a lower log-loss than the best single."""
        return len(self.members) >= 2 and self.log_loss < self.best_single_log_loss - MIN_IMPROVEMENT


def greedy_selection(probs: Mapping[str, np.ndarray], y: np.ndarray, *, max_steps: int = DEFAULT_MAX_STEPS,
                     allowed: Callable[[frozenset[str]], bool] | None = None) -> EnsembleSelection | None:
    """Greedy selection with replacement over ``probs`` (``{name: (n, classes)}``, rows aligned with
    the true class indices ``y``). ``allowed`` says whether a set of distinct models may form the
    ensemble (e.g. a latency budget); models or additions it refuses are never taken.

    Returns None when no single model is allowed. Ties go to the model given first.
    """
    names = list(probs)
    if not names:
        return None
    y = np.asarray(y, dtype=np.int64)
    arrays = {n: np.asarray(probs[n], dtype=np.float64) for n in names}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or next(iter(shapes))[0] != len(y):
        raise ValueError(f"probabilities must all have shape (len(y), classes); got {sorted(shapes)} for {len(y)} labels")
    allowed = allowed or (lambda chosen: True)
    singles = {n: log_loss(arrays[n], y) for n in names}
    best_single = min(names, key=lambda n: (singles[n], names.index(n)))
    candidates = [n for n in names if allowed(frozenset([n]))]
    if not candidates:
        return None
    first = min(candidates, key=lambda n: (singles[n], names.index(n)))
    counts = {n: 0 for n in names}
    counts[first] = 1
    total = arrays[first].copy()
    current = singles[first]
    history = [current]
    steps = 1
    while steps < max_steps:
        chosen = frozenset(n for n, c in counts.items() if c)
        best_name, best_loss = None, current
        for n in names:
            if not allowed(chosen | {n}):
                continue
            loss = log_loss((total + arrays[n]) / (steps + 1), y)
            if loss < best_loss - MIN_IMPROVEMENT:
                best_name, best_loss = n, loss
        if best_name is None:
            break
        counts[best_name] += 1
        total += arrays[best_name]
        steps += 1
        current = best_loss
        history.append(current)
    mix = total / steps
    return EnsembleSelection(
        weights={n: counts[n] / steps for n in names}, counts=counts, steps=steps, log_loss=current,
        accuracy=accuracy(mix, y), best_single=best_single, best_single_log_loss=singles[best_single],
        best_single_accuracy=accuracy(arrays[best_single], y), history=history,
    )


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


def finite(value: float) -> float | None:
    """``value``, or None when it is not finite (JSON has no NaN)."""
    return value if math.isfinite(value) else None
