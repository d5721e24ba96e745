"""Fitting the face head of a ``face_embedding`` model, after its fallback network has trained.

The head is a multinomial logistic regression on the standardised 128-D descriptors of the train
images' largest faces. Its one choice, the L2 strength ``C``, is made like every other training
choice: by log-loss on the validation images (with a face), never on the test split. The model's
validation score, by which ``compare`` ranks it, is that of the whole model: the face head on the
validation images with a face, the fallback network on the others.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from image_classifier.errors import DatasetError
from image_classifier.faces import FaceCache, weights_sha256
from image_classifier.models.faces import FaceHead
from image_classifier.preprocessing import Preprocessing

log = logging.getLogger(__name__)

#: Inverse L2 strengths tried; descriptors of one person are tight (dlib's same-person threshold is
#: a Euclidean distance of 0.6), so weak regularisation usually wins, but few photos need more.
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Logit bias of a class with no face among its training images: it is never the face path's answer.
ABSENT_CLASS_BIAS = -30.0


@dataclass
class FaceHeadFit:
    head: FaceHead
    val_loss: float  # whole model: face head where a face is found, fallback elsewhere
    val_accuracy: float
    card: dict[str, Any]  # the card's "faces" section


def _descriptors(records: Sequence[Any], cache: FaceCache, progress: bool, desc: str
                 ) -> tuple[list[np.ndarray | None], dict[str, int]]:
    found, failures = cache.analyse_files([(r.path, r.sha256) for r in records], progress=progress, desc=desc)
    out, methods = [], {}
    for r in records:
        analysis = found.get(r.sha256)
        d = None if analysis is None else analysis.descriptor
        out.append(d)
        if analysis is not None and analysis.method:
            methods[analysis.method] = methods.get(analysis.method, 0) + 1
    return out, methods


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def _fit(x: np.ndarray, y: np.ndarray, num_classes: int, c: float, mean: np.ndarray, scale: np.ndarray) -> FaceHead:
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.full(num_classes, ABSENT_CLASS_BIAS)
    lr = LogisticRegression(C=c, max_iter=5000, tol=1e-6).fit((x - mean) / scale, y)
    if len(present) == 2:  # sklearn returns one row for a binary problem: logit of the second class
        weight[present[1]] = lr.coef_[0]
        bias[present[0]], bias[present[1]] = 0.0, lr.intercept_[0]
    else:
        weight[lr.classes_] = lr.coef_
        bias[lr.classes_] = lr.intercept_
    return FaceHead(weight, bias, mean, scale)


def _fallback_probs(net: torch.nn.Module, prep: Preprocessing, images: torch.Tensor) -> np.ndarray:
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            logits = net(prep.normalize(images[start:start + 64])).float()
            out.append(torch.softmax(logits, 1).numpy())
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def fit_face_head(net: torch.nn.Module, train_records: Sequence[Any], val_records: Sequence[Any],
                  val_set: Any, prep: Preprocessing, num_classes: int, cache: FaceCache, *,
                  progress: bool = False) -> FaceHeadFit:
    """Fit the face head of ``net`` (written into its buffers) and score the whole model on validation.

    ``val_set`` is the decoded validation subset (:class:`~image_classifier.train.cache.DecodedSet`)
    the fallback network was validated on.
    """
    t0 = time.perf_counter()
    sha = weights_sha256()  # fails early, naming the package, when the face weights are missing
    train_d, train_methods = _descriptors(train_records, cache, progress, "faces (train)")
    val_d, val_methods = _descriptors(val_records, cache, progress, "faces (val)")
    analyse_seconds = time.perf_counter() - t0

    tr = [i for i, d in enumerate(train_d) if d is not None]
    x = np.stack([train_d[i] for i in tr]).astype(np.float64) if tr else np.empty((0, 128))
    y = np.array([train_records[i].label for i in tr], dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise DatasetError(
            f"face_embedding needs faces in the training images of at least two classes; faces were found in "
            f"{len(tr)} of {len(train_records)} training images ({len(np.unique(y))} class(es)). Use the CNNs "
            "for this folder (compare --models without face_embedding)")
    mean, scale = x.mean(0), x.std(0) + 1e-6

    va = [i for i, d in enumerate(val_d) if d is not None]
    xv = np.stack([val_d[i] for i in va]).astype(np.float64) if va else np.empty((0, 128))
    yv = np.array([val_records[i].label for i in va], dtype=np.int64)
    tried = []
    best_c, best_loss, best_head = C_GRID[len(C_GRID) // 2], float("inf"), None
    for c in C_GRID:
        head = _fit(x, y, num_classes, c, mean, scale)
        if len(va) == 0:  # nothing to choose on: keep the middle of the grid
            best_head = _fit(x, y, num_classes, best_c, mean, scale)
            break
        probs = head.probabilities(xv)
        loss = _nll(probs, yv)
        tried.append({"C": c, "val_face_loss": round(loss, 5),
                      "val_face_accuracy": round(float((probs.argmax(1) == yv).mean()), 5)})
        if loss < best_loss - 1e-9:
            best_c, best_loss, best_head = c, loss, head
    assert best_head is not None
    best_head.write_to(net)

    # The whole model on validation: face head where a face was found, the fallback elsewhere.
    row_of = {p: k for k, p in enumerate(val_set.rel_paths)}
    probs_all, labels_all = [], []
    if va:
        probs_all.append(best_head.probabilities(xv))
        labels_all.append(yv)
    noface = [i for i, d in enumerate(val_d) if d is None and val_records[i].rel_path in row_of]
    if noface:
        rows = torch.tensor([row_of[val_records[i].rel_path] for i in noface])
        probs_all.append(_fallback_probs(net, prep, val_set.images[rows]))
        labels_all.append(np.array([val_records[i].label for i in noface], dtype=np.int64))
    probs = np.concatenate(probs_all)
    labels = np.concatenate(labels_all)
    val_loss, val_acc = _nll(probs, labels), float((probs.argmax(1) == labels).mean())
    face_acc = float((best_head.probabilities(xv).argmax(1) == yv).mean()) if va else None
    log.info("face head: C=%g; validation: %d of %d images with a face (face accuracy %s), whole model "
             "accuracy %.3f, loss %.4f", best_c, len(va), len(val_records),
             "n/a" if face_acc is None else f"{face_acc:.3f}", val_acc, val_loss)
    card = {
        "weights_sha256": sha,
        "head": {"kind": "logistic_regression", "C": best_c, "selected_by": "validation log-loss (images with a face)",
                 "tried": tried, "train_faces": len(tr)},
        "detection": {"train": {"images": len(train_records), "with_face": len(tr), "methods": train_methods},
                      "val": {"images": len(val_records), "with_face": len(va), "methods": val_methods}},
        "val_face_accuracy": face_acc,
        "val_noface_images": len(noface),
        "seconds": round(time.perf_counter() - t0, 3),
        "analyse_seconds": round(analyse_seconds, 3),
    }
    return FaceHeadFit(best_head, val_loss, val_acc, card)


__all__ = ["C_GRID", "FaceHeadFit", "fit_face_head"]
