"""Choosing the model to serve, from evidence on the training and validation images only (numpy).

Each candidate (a trained model, a face-first cascade, a weighted ensemble) brings:

* ``val``: per validation image, right or wrong, from the model as it is saved (every candidate on
  the same images, in the same order);
* ``cv`` (where the candidate can be refitted in seconds): per train + validation image, its
  out-of-fold correctness averaged over R repeats of K-fold cross-validation, and each fold's
  accuracy and log-loss (:class:`CrossValidated`);
* ``strangers`` (folders of people): per stranger image, whether the candidate's "none of these"
  rule, fitted to keep ``keep`` of the known validation images, accepted it.

The rule (:func:`choose`), one step after the other, each keeping the candidates the step cannot
tell apart:

1. **Strangers** (folders of people): only the candidates that accept at most
   :data:`MAX_STRANGERS` of the strangers are eligible. When none is, the eligible ones are those
   that no other turns away significantly more strangers than (paired bootstrap over the
   strangers), and the choice says that the served model will call some strangers one of the known
   people. Not every candidate: with a few validation photos (a dozen strangers is one photo a
   person) the best can miss the bar by one photo, and a tie on accuracy would then go to the
   simplest candidate, which may accept nine strangers in ten.
2. **Accuracy**: the candidates that no other eligible candidate beats beyond the noise. Two
   candidates are compared on the images both have honest predictions for (out-of-fold over
   train + validation when both have them, else the validation images) by a paired bootstrap of
   the accuracy difference: a 95 % interval that contains 0 is a tie.
3. **Strangers again** (folders of people): of those, the ones no other turns away significantly
   more strangers than (paired bootstrap over the strangers).
4. **Simplicity**: a single model before a cascade before a weighted ensemble; then the fewest
   parameters; then the order given.

A tie is never broken by a second noisy number (the validation loss of the same few images):
it goes to what matters next.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: A folder of people is served by a model that accepts at most this share of strangers.
MAX_STRANGERS = 0.10
#: Bootstrap resamples of every paired comparison, and the interval's coverage.
N_BOOTSTRAP = 2000
CONFIDENCE = 0.95

#: Candidate kinds, simplest first (step 4 of the rule).
MODEL, CASCADE, ENSEMBLE = "model", "cascade", "ensemble"
KIND_ORDER = (MODEL, CASCADE, ENSEMBLE)

#: What decided a choice (``Choice.decided_by``).
ONLY = "only candidate"
ACCURACY = "accuracy"
STRANGERS = "strangers"
SIMPLICITY = "simplicity"
PARAMETERS = "parameters"
ORDER = "order"


@dataclass
class CrossValidated:
    """Out-of-fold predictions over train + validation: R repeats of K-fold, every image once per repeat."""

    correct: np.ndarray  # (images,) fraction of repeats in which the image was predicted right
    nll: np.ndarray  # (images,) mean negative log-likelihood of its true class over the repeats
    fold_accuracy: np.ndarray  # (repeats * folds,)
    fold_log_loss: np.ndarray
    repeats: int
    folds: int
    method: str  # what was refitted in each fold, for people

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.fold_accuracy))

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.fold_accuracy, ddof=1)) if len(self.fold_accuracy) > 1 else 0.0

    @property
    def log_loss(self) -> float:
        return float(np.mean(self.fold_log_loss))

    @property
    def log_loss_std(self) -> float:
        return float(np.std(self.fold_log_loss, ddof=1)) if len(self.fold_log_loss) > 1 else 0.0

    @property
    def images(self) -> int:
        return int(len(self.correct))


@dataclass
class Candidate:
    """One thing ``compare`` could serve, with its evidence (see the module docstring)."""

    name: str
    kind: str  # MODEL, CASCADE or ENSEMBLE
    val_correct: np.ndarray  # (validation images,) bool
    val_nll: np.ndarray  # (validation images,) negative log-likelihood of the true class
    parameters: int
    cv: CrossValidated | None = None
    #: Per stranger image, accepted by the candidate's rule (None: not measured).
    strangers_accepted: np.ndarray | None = None
    members: tuple[str, ...] = ()
    description: str = ""  # e.g. "face_embedding where a face matches, resnet50 elsewhere"

    def __post_init__(self) -> None:
        if self.kind not in KIND_ORDER:
            raise ValueError(f"unknown candidate kind {self.kind!r}; one of {', '.join(KIND_ORDER)}")
        self.val_correct = np.asarray(self.val_correct, dtype=bool)
        self.val_nll = np.asarray(self.val_nll, dtype=np.float64)
        if self.strangers_accepted is not None:
            self.strangers_accepted = np.asarray(self.strangers_accepted, dtype=bool)

    @property
    def val_accuracy(self) -> float:
        return float(self.val_correct.mean()) if len(self.val_correct) else float("nan")

    @property
    def val_log_loss(self) -> float:
        return float(self.val_nll.mean()) if len(self.val_nll) else float("nan")

    @property
    def accuracy(self) -> float:
        """The best estimate of its accuracy: out-of-fold where it has it, else validation."""
        return self.cv.accuracy if self.cv is not None else self.val_accuracy

    @property
    def strangers_rate(self) -> float | None:
        a = self.strangers_accepted
        return None if a is None or len(a) == 0 else float(a.mean())


@dataclass(frozen=True)
class Difference:
    """A paired comparison of two candidates: ``a - b`` with its bootstrap interval."""

    a: str
    b: str
    estimate: float
    low: float
    high: float
    images: int
    evidence: str  # "cv" (out-of-fold over train + validation), "val", or "strangers"

    @property
    def tie(self) -> bool:
        return self.low <= 0.0 <= self.high


def paired_difference(a: np.ndarray, b: np.ndarray, *, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
                      confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired per-image scores and its percentile bootstrap interval
    (images resampled with replacement, the same resample for both)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two 1-D arrays of one length, not {a.shape} and {b.shape}")
    if len(a) == 0:
        return 0.0, -np.inf, np.inf  # no evidence: anything is a tie
    d = a - b
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_bootstrap, len(d)))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    return float(d.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def accuracy_difference(a: Candidate, b: Candidate, *, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> Difference:
    """``a``'s accuracy minus ``b``'s on the best paired evidence they share."""
    if a.cv is not None and b.cv is not None and a.cv.images == b.cv.images:
        x, y, evidence = a.cv.correct, b.cv.correct, "cv"
    else:
        x, y, evidence = a.val_correct, b.val_correct, "val"
    est, low, high = paired_difference(x, y, n_bootstrap=n_bootstrap, seed=seed)
    return Difference(a.name, b.name, est, low, high, len(x), evidence)


def strangers_difference(a: Candidate, b: Candidate, *, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> Difference:
    """``a``'s share of strangers accepted minus ``b``'s (both measured on the same strangers)."""
    x, y = a.strangers_accepted, b.strangers_accepted
    if x is None or y is None or len(x) != len(y):
        raise ValueError(f"{a.name} and {b.name} were not measured on the same strangers")
    est, low, high = paired_difference(x, y, n_bootstrap=n_bootstrap, seed=seed)
    return Difference(a.name, b.name, est, low, high, len(x), "strangers")


def _fewer_strangers(group: list[Candidate], n_bootstrap: int, seed: int) -> dict[tuple[str, str], bool]:
    """Per ordered pair of ``group``: whether the first accepts significantly fewer strangers."""
    return {(a.name, b.name): strangers_difference(a, b, n_bootstrap=n_bootstrap, seed=seed).high < 0.0
            for a in group for b in group if a is not b}


def _undominated(group: list[Candidate], better: dict[tuple[str, str], bool]) -> list[Candidate]:
    """The members of ``group`` that no other member is significantly better than."""
    return [m for m in group if not any(better[(o.name, m.name)] for o in group if o is not m)]


@dataclass
class Choice:
    """What :func:`choose` decided, and everything needed to say why."""

    chosen: str
    decided_by: str  # ONLY, ACCURACY, STRANGERS, SIMPLICITY, PARAMETERS or ORDER
    people: bool  # the rule required turning strangers away
    #: False when no candidate turns away enough strangers (a folder of people); None: not required.
    can_reject: bool | None
    eligible: list[str]
    tied: list[str]  # the eligible candidates no other beat on accuracy beyond the noise
    #: Every paired accuracy comparison of the chosen candidate with another.
    accuracy_differences: list[Difference] = field(default_factory=list)
    max_strangers: float = MAX_STRANGERS


def choose(candidates: Sequence[Candidate], *, people: bool, max_strangers: float = MAX_STRANGERS,
           n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> Choice:
    """The candidate to serve, by the rule of the module docstring. ``people``: the folder is of
    people, so turning strangers away is required (candidates whose strangers were not measured
    are then not eligible: nothing shows they can)."""
    if not candidates:
        raise ValueError("no candidate to choose from")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique: {names}")
    lengths = {len(c.val_correct) for c in candidates}
    if len(lengths) != 1:
        raise ValueError(f"every candidate must be scored on the same validation images, not {sorted(lengths)}")
    pool = list(candidates)
    can_reject: bool | None = None
    if people:
        measured = [c for c in pool if c.strangers_rate is not None]
        passing = [c for c in measured if c.strangers_rate <= max_strangers + 1e-12]
        can_reject = bool(passing)
        if passing:
            pool = passing
        elif measured:
            pool = _undominated(measured, _fewer_strangers(measured, n_bootstrap, seed)) or measured
    eligible = [c.name for c in pool]

    diffs = {(a.name, b.name): accuracy_difference(a, b, n_bootstrap=n_bootstrap, seed=seed)
             for a in pool for b in pool if a is not b}
    better = {k: d.low > 0.0 for k, d in diffs.items()}
    tied = _undominated(pool, better) or [max(pool, key=lambda c: c.accuracy)]
    group, decided_by = tied, ACCURACY

    if people and can_reject and len(group) > 1:
        narrowed = _undominated(group, _fewer_strangers(group, n_bootstrap, seed)) or group
        if len(narrowed) < len(group):
            group, decided_by = narrowed, STRANGERS
    if len(group) > 1:
        steps = ((SIMPLICITY, lambda c: KIND_ORDER.index(c.kind)), (PARAMETERS, lambda c: c.parameters),
                 (ORDER, lambda c: names.index(c.name)))
        for step, key in steps:
            best = min(key(c) for c in group)
            narrowed = [c for c in group if key(c) == best]
            if len(narrowed) < len(group):
                group, decided_by = narrowed, step
            if len(group) == 1:
                break
    if len(candidates) == 1:
        decided_by = ONLY
    chosen = group[0]
    return Choice(
        chosen=chosen.name, decided_by=decided_by, people=people, can_reject=can_reject, eligible=eligible,
        tied=[c.name for c in tied],
        accuracy_differences=[accuracy_difference(chosen, c, n_bootstrap=n_bootstrap, seed=seed)
                              for c in candidates if c is not chosen],
        max_strangers=max_strangers,
    )
