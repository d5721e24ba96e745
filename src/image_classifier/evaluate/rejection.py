"""Measuring "none of these": how well a model's rejection rule tells known images from unknown ones.

Two ways, both scoring the rule fitted on the validation split (``inference.rejection``):

* **unknown folder** (``compare --unknown DIR``): the known images are the test split, the unknowns
  every image under ``DIR`` (flat or nested). Costs one prediction per unknown image per model.
* **leave-one-class-out** (no folder): for each class c, a linear softmax head is refitted on the
  *other* classes' penultimate features of the trained network (the input of its last linear
  layer), its max-probability threshold is fitted on their validation images at the same ``keep``,
  and c's test images are the unknowns. The numbers are averaged over the classes. The features of
  the validation and test images are captured during the passes that fit the rule and score the
  test split; only a sample of the training images (:data:`LOCO_TRAIN_PER_CLASS` per class) is run
  again, so the cost stays a fraction of one evaluation. It needs at least three classes (two
  known ones left). For a face model the features are the face descriptors the run's face survey
  already computed (the largest face of each image that has one), and the score is the distance to
  the nearest training descriptor of the known classes, as its own rule scores a face: images
  without a face are left out of this measurement.

Per model: ``auroc`` (known test vs unknown images by the rule's score), ``unknown_accept_rate``
(unknowns accepted as a class at the validation threshold), ``known_kept_rate`` and
``known_accuracy_kept`` (accepted and correct / accepted).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from image_classifier.data.scan import is_ignored
from image_classifier.errors import DatasetError
from image_classifier.inference.calibration import softmax
from image_classifier.inference.model import Model
from image_classifier.inference.rejection import FACE_DISTANCE, MAX_PROBABILITY, Decision, RejectionRule
from image_classifier.models.face_embedding import nearest_distances
from image_classifier.results import OpenSet

log = logging.getLogger(__name__)

UNKNOWN_FOLDER = "unknown folder"
LEAVE_ONE_CLASS_OUT = "leave-one-class-out"
#: File name endings taken for images in an unknown folder (other files are ignored, not warned about).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: Training images per class whose features the leave-one-class-out heads are fitted on.
LOCO_TRAIN_PER_CLASS = 25


def auroc(known: Sequence[float], unknown: Sequence[float]) -> float | None:
    """P(a known image scores higher than an unknown one), ties counting one half (the
    Mann-Whitney U statistic, normalised). None when either side is empty."""
    k = np.asarray(known, dtype=np.float64)
    u = np.asarray(unknown, dtype=np.float64)
    if len(k) == 0 or len(u) == 0:
        return None
    both = np.concatenate([k, u])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both), dtype=np.float64)
    sorted_values = both[order]
    i = 0
    while i < len(both):  # average ranks over ties
        j = i
        while j + 1 < len(both) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u_stat = ranks[:len(k)].sum() - len(k) * (len(k) + 1) / 2
    return float(u_stat / (len(k) * len(u)))


@dataclass(frozen=True)
class UnknownImage:
    """An image of none of the classes (a path; ``rel_path`` relative to the folder)."""

    path: Path
    rel_path: str


def unknown_images(folder: str | os.PathLike) -> list[UnknownImage]:
    """Every image file under ``folder`` (nested or flat), sorted; DatasetError when there is none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError(f"--unknown {folder}: not a folder (give a folder of images of none of the classes)")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
        for name in filenames:
            if not is_ignored(name) and name.lower().endswith(IMAGE_SUFFIXES):
                path = Path(dirpath) / name
                found.append(UnknownImage(path, path.relative_to(root).as_posix()))
    if not found:
        raise DatasetError(f"--unknown {folder}: no image files in it ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(found, key=lambda u: u.rel_path)


def split_unknowns(images: Sequence[UnknownImage], seed: int = 0) -> tuple[list[UnknownImage], list[UnknownImage]]:
    """The unknown folder in two halves, dealt by a seeded permutation: the first (rounded down)
    for the validation side (choosing the served model), the second for the test side (measuring
    it). Both halves keep the folder's sorted order."""
    order = np.random.default_rng(seed).permutation(len(images))
    val = sorted(order[: len(images) // 2].tolist())
    test = sorted(order[len(images) // 2:].tolist())
    return [images[i] for i in val], [images[i] for i in test]


def summarise(method: str, rule: RejectionRule, known: Sequence[Decision], known_correct: np.ndarray,
              unknown: Sequence[Decision], *, source: str | None = None, seconds: float | None = None) -> OpenSet:
    """The :class:`OpenSet` numbers from the rule's decisions on the known and the unknown images."""
    kept = np.array([d.accepted for d in known], dtype=bool)
    unknown_accepted = np.array([d.accepted for d in unknown])
    correct = np.asarray(known_correct, dtype=bool)
    return OpenSet(
        method=method, score=rule.scale, keep=rule.keep,
        auroc=auroc(np.array([d.score for d in known]), np.array([d.score for d in unknown])),
        unknown_accept_rate=float(np.mean(unknown_accepted)) if len(unknown_accepted) else None,
        known_kept_rate=float(kept.mean()) if len(kept) else None,
        known_accuracy_kept=float(correct[kept].mean()) if kept.any() else None,
        known_images=int(len(kept)), unknown_images=int(len(unknown_accepted)), source=source, seconds=seconds,
    )


def measure_unknown_folder(classifier: Model, known_probs: np.ndarray, known_details: Sequence[dict[str, Any]],
                           known_correct: np.ndarray, unknowns: Sequence[UnknownImage], *, cache: Any = None,
                           source: str | None = None) -> OpenSet | None:
    """The rule of ``classifier`` on the known test predictions (already made) and on ``unknowns``
    (predicted here; ``cache``: a ``DecodeCache`` shared between the models). None without a rule."""
    rule = classifier.rejection_rule
    if rule is None:
        return None
    t0 = time.perf_counter()
    probs, details, _ = classifier.predict_paths(unknowns, cache)
    # Scored as Classifier.judge scores them: the probabilities with the temperature taken out.
    known = rule.accepts(classifier.uncalibrated(known_probs, known_details), known_details)
    unknown = rule.accepts(classifier.uncalibrated(probs, details), details)
    return summarise(UNKNOWN_FOLDER, rule, known, known_correct, unknown, source=source,
                     seconds=time.perf_counter() - t0)


# ---- leave-one-class-out -------------------------------------------------------------------------

class FeatureTap:
    """The input of a network's last linear layer (its penultimate features), recorded during
    whatever forward passes run while it is :meth:`attached`. Every pass in between must be of
    images whose features are wanted, in order."""

    def __init__(self, module: nn.Module) -> None:
        self.layer = next((m for m in reversed(list(module.modules())) if isinstance(m, nn.Linear)), None)
        self.batches: list[np.ndarray] = []

    @property
    def available(self) -> bool:
        return self.layer is not None

    @contextlib.contextmanager
    def attached(self) -> Iterator[FeatureTap]:
        self.batches = []
        if self.layer is None:
            yield self
            return

        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self.batches.append(inputs[0].detach().float().flatten(1).cpu().numpy())

        handle = self.layer.register_forward_pre_hook(hook)
        try:
            yield self
        finally:
            handle.remove()

    def features(self) -> np.ndarray:
        return np.concatenate(self.batches) if self.batches else np.empty((0, 0), dtype=np.float32)


#: Principal components the leave-one-class-out heads see: a few dozen training images per class
#: cannot fit more directions, and the fit stays a few milliseconds.
LOCO_COMPONENTS = 32


def fit_softmax_head(x: np.ndarray, y: np.ndarray, num_classes: int, *, l2: float = 1e-2,
                     steps: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A multinomial logistic regression (LBFGS, L2) on the leading principal components of the
    standardised features: (weight, bias, mean, projection), applied as ``((x - mean) @ projection) @ weight + bias``."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    xs = (x - mean) / scale
    # The leading right singular vectors through the small (images x images) Gram matrix: images
    # are far fewer than feature dimensions (75 against 2048 for ResNet-50).
    eigenvalues, u = np.linalg.eigh(xs @ xs.T)
    top = np.argsort(eigenvalues)[::-1][:LOCO_COMPONENTS]
    top = top[eigenvalues[top] > 1e-9 * max(eigenvalues.max(), 1e-12)]
    vt = (xs.T @ u[:, top] / np.sqrt(eigenvalues[top])[None, :]).T
    projection = (vt / scale[None, :]).T  # standardise, then project
    z = (x - mean) @ projection
    z_scale = z.std(0) + 1e-6
    projection = projection / z_scale[None, :]  # unit variance per component
    xt = torch.from_numpy(((x - mean) @ projection).astype(np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    w = torch.zeros(xt.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().double().numpy(), b.detach().double().numpy(), mean, projection


def head_probabilities(head: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    w, b, mean, projection = head
    return softmax(((np.asarray(x, dtype=np.float64) - mean) @ projection) @ w + b)


def leave_one_class_out(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                        test: tuple[np.ndarray, np.ndarray], num_classes: int, keep: float, *,
                        seconds: float | None = None, score: str = MAX_PROBABILITY) -> OpenSet | None:
    """Leave-one-class-out on (features, labels) of the three subsets; see the module docstring.
    None when fewer than three classes have images in every subset.

    ``score``: ``max_probability`` (the refitted head's, for a CNN's penultimate features) or
    ``face_distance`` (for embeddings such as a face model's descriptors: the distance to the
    nearest training embedding of the known classes, as the face model's own rule scores a face;
    the head still gives the known images' predicted class)."""
    t0 = time.perf_counter()
    present = [c for c in range(num_classes)
               if all((labels == c).any() for _, labels in (train, val, test))]
    if len(present) < 3:
        return None
    per_class: list[OpenSet] = []
    for c in present:
        others = [k for k in present if k != c]
        remap = {k: i for i, k in enumerate(others)}

        def subset(data: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            x, y = data
            mask = np.isin(y, others)
            return x[mask], np.array([remap[int(v)] for v in y[mask]], dtype=np.int64)

        xt, yt = subset(train)
        head = fit_softmax_head(xt, yt, len(others))
        xv, _ = subset(val)
        xk, yk = subset(test)
        xu = test[0][test[1] == c]
        known_probs = head_probabilities(head, xk)
        if score == FACE_DISTANCE:  # in float64, as the face model measures them (descriptors may come as float32)
            xv, xk, xu, xt = (np.asarray(a, dtype=np.float64) for a in (xv, xk, xu, xt))
            rule = RejectionRule.fit([FACE_DISTANCE] * len(xv), nearest_distances(xv, xt), keep)
            known_values, unknown_values = nearest_distances(xk, xt), nearest_distances(xu, xt)
        else:
            rule = RejectionRule.fit([MAX_PROBABILITY] * len(xv), head_probabilities(head, xv).max(1), keep)
            known_values, unknown_values = known_probs.max(1), head_probabilities(head, xu).max(1)
        known = rule.decide([score] * len(xk), known_values)
        unknown = rule.decide([score] * len(xu), unknown_values)
        per_class.append(summarise(LEAVE_ONE_CLASS_OUT, rule, known, known_probs.argmax(1) == yk, unknown))

    def mean(values: list[float | None]) -> float | None:
        vals = [v for v in values if v is not None]
        return float(np.mean(vals)) if vals else None

    return OpenSet(LEAVE_ONE_CLASS_OUT, per_class[0].score, keep, mean([p.auroc for p in per_class]),
                   mean([p.unknown_accept_rate for p in per_class]), mean([p.known_kept_rate for p in per_class]),
                   mean([p.known_accuracy_kept for p in per_class]),
                   known_images=sum(p.known_images for p in per_class),
                   unknown_images=sum(p.unknown_images for p in per_class),
                   seconds=(seconds or 0.0) + time.perf_counter() - t0)


def sample_per_class(items: Sequence[Any], per_class: int = LOCO_TRAIN_PER_CLASS) -> list[Any]:
    """The first ``per_class`` items of each class (items have ``class_name``), in the given order."""
    taken: dict[str, int] = {}
    out = []
    for it in items:
        if taken.get(it.class_name, 0) < per_class:
            taken[it.class_name] = taken.get(it.class_name, 0) + 1
            out.append(it)
    return out


def features_of(classifier: Model, tap: FeatureTap, items: Sequence[Any], cache: Any = None) -> tuple[np.ndarray, list[int]]:
    """Penultimate features of ``items`` (one forward pass; decoded through ``cache``) and the
    indices of the items that decoded."""
    with tap.attached():  # decoding runs no network: only the forward passes are recorded
        _, _, decoded = classifier.predict_paths(items, cache)
    return tap.features(), decoded.kept


def face_leave_one_class_out(analyses: Mapping[str, Any], classes: Sequence[str],
                             subsets: Mapping[str, Sequence[Any]], keep: float) -> OpenSet | None:
    """Leave-one-class-out for a face model, on the descriptors the face survey already computed
    (``analyses``: rel_path -> FaceAnalysis; the largest face of each image that has one) of the
    ``train``, ``val`` and ``test`` items (anything with ``rel_path`` and ``class_name``), scored by
    the distance to the nearest training descriptor of the known classes. Images without a face
    are left out. None when fewer than three classes have a face in every subset."""
    t0 = time.perf_counter()
    index = {name: i for i, name in enumerate(classes)}

    def embed(items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        rows, labels = [], []
        for item in items:
            analysis = analyses.get(item.rel_path)
            descriptor = None if analysis is None else analysis.descriptor
            if descriptor is not None and item.class_name in index:
                rows.append(np.asarray(descriptor, dtype=np.float64))
                labels.append(index[item.class_name])
        return (np.stack(rows) if rows else np.empty((0, 128))), np.array(labels, dtype=np.int64)

    return leave_one_class_out(embed(subsets["train"]), embed(subsets["val"]), embed(subsets["test"]),
                               len(classes), keep, score=FACE_DISTANCE, seconds=time.perf_counter() - t0)
