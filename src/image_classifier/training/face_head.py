"""Fitting the face head of a ``face_embedding`` model, after its fallback network has trained.

1. **Which face is the labelled person.** A photo labelled "Kobe Bryant" may show his partner,
   team-mates or a crowd. The photos of a class with exactly one face are its *anchors*; in every
   training photo the face nearest to the other anchors of its class is the labelled person's, if
   it is within :data:`SAME_PERSON` of one (dlib's own same-person threshold); a photo with no such
   face trains only the fallback. Those faces are the model's *bank*.
2. **The head** is a multinomial logistic regression on the standardised bank descriptors. Its L2
   strength ``C`` is chosen by the out-of-fold log-loss of the faces within :data:`SAME_PERSON` of
   the bank, over 5 x 2 folds of the training *and* validation photos (:func:`choose_settings`):
   the validation split's few dozen faces alone let one photo move C across the whole grid.
3. **When a face decides.** At prediction the largest face within ``max_distance`` of the bank
   decides, alone when it is within :data:`ALONE_WITHIN` of it, else together with the fallback
   (:func:`~image_classifier.models.face_embedding.with_fallback`); when there is none, the
   fallback network answers for the whole photo. ``max_distance`` is chosen on the same folds, by
   the whole model's log-loss, the doubtful faces answered with the fallback (a linear head on the
   fallback's frozen features stands for it in the folds). The head itself is then fitted on the
   training faces, and the whole model is scored on the validation split (what ``compare`` ranks).
4. **The validation faces join the bank** once these choices are made (each validation photo's
   face nearest to its own person's training faces, within :data:`SAME_PERSON`), and the card
   records each row's photo (``bank.sources``, SHA-256): a photo is measured against the bank
   without its own face, so everything fitted on validation afterwards (temperatures, the "none of
   these" rule, the choice of model to serve) reads each validation photo as a photo the model has
   not seen. A bank that covers more of each person's looks brings their new photos closer to it
   than it brings strangers': measured on the athletes' validation photos (split seeds 0-4), a bank
   of 80 % of the training faces accepted 7.9 % of the validation strangers at 95 % of the known
   kept, the whole bank 6.9 %.
5. **The picture bank**: the training photos' pooled fallback features (the card's ``pictures``):
   what tells a photo of no one from the known people's photos when no face is found (the "none
   of these" rule's ``picture_distance``).
6. **The rule's references** (the card's ``references``; :mod:`image_classifier.training.face_references`):
   every training and validation photo's face distance and picture distance, each measured
   against the banks without its own duplicate group, so that the rule fitted on them reads each
   as a photo the model has not seen.

Every choice uses the train and validation splits only; the test split is never read. The
model's validation score, by which ``compare`` ranks it, is the whole model's (on the training
faces' bank). ``compare``'s evidence (:func:`face_model_oof`) refits the same folds at the chosen settings.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from image_classifier.errors import DatasetError
from image_classifier.faces import FaceCache, weights_sha256
from image_classifier.faces.thresholds import FACE_ALONE_DISTANCE, SAME_PERSON_DISTANCE
from image_classifier.models.face_embedding import (
    FaceHead, choose_face, face_answers, nearest_distances, unit_rows,
)
from image_classifier.preprocessing import Preprocessing
from image_classifier.training.cache import ImageCache
from image_classifier.training.face_references import REFERENCES_METHOD, face_references, picture_references
from image_classifier.training.folds import (
    FOLDS, REPEATS, Fold, fit_linear_head, linear_probe_oof, repeated_folds, standardised_lr,
)
from image_classifier.training.frozen_features import FrozenFeatures

log = logging.getLogger(__name__)

#: Inverse L2 strengths tried; descriptors of one person are tight, so weak regularisation usually
#: wins, but a few photos per class need more.
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: dlib's same-person threshold on descriptor distance (its LFW accuracy is measured at 0.6).
SAME_PERSON = SAME_PERSON_DISTANCE
#: A deciding face further than this from the bank answers together with the fallback.
ALONE_WITHIN = FACE_ALONE_DISTANCE
#: Largest distance to the bank at which a face still decides; inf = any face decides.
MAX_DISTANCE_GRID = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, float("inf"))


@dataclass
class FaceHeadFit:
    head: FaceHead
    val_loss: float  # whole model: face head where a face decides, fallback elsewhere
    val_accuracy: float
    card: dict[str, Any]  # the card's "faces" section


def _analyses(records: Sequence[Any], cache: FaceCache, progress: bool, desc: str) -> list[Any]:
    found, _ = cache.analyse_files([(r.path, r.sha256) for r in records], progress=progress, desc=desc)
    return [found.get(r.sha256) for r in records]


def _with_face(analyses: Sequence[Any]) -> int:
    return sum(a is not None and a.face is not None for a in analyses)


def _detection(analyses: Sequence[Any]) -> dict[str, Any]:
    """The card's detection entry of one subset: its photos, how many show a face, found how."""
    methods = Counter(a.method for a in analyses if a is not None and a.method)
    return {"images": len(analyses), "with_face": _with_face(analyses), "methods": dict(methods)}


def labelled_faces(analyses: Sequence[Any], labels: np.ndarray) -> list[int | None]:
    """Per training photo, the index of the labelled person's face (see the module doc), or None."""
    anchors: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, a in enumerate(analyses):
        if a is not None and a.descriptors is not None and len(a.faces) == 1:
            anchors.setdefault(int(labels[i]), []).append((i, a.descriptors[0]))
    chosen: list[int | None] = []
    for i, a in enumerate(analyses):
        if a is None or a.descriptors is None:
            chosen.append(None)
            continue
        others = [d for j, d in anchors.get(int(labels[i]), []) if j != i]
        if not others:  # no other single-face photo of this person to compare with: trust the largest
            chosen.append(0)
            continue
        chosen.append(face_like(a.descriptors, np.stack(others)))
    return chosen


def face_like(descriptors: np.ndarray, references: np.ndarray) -> int | None:
    """The index of the face (a row of ``descriptors``) nearest to any of ``references``, if it is
    within :data:`SAME_PERSON` of one; else None: the same person's face, as dlib judges it."""
    dist = nearest_distances(np.asarray(descriptors, np.float64), np.asarray(references, np.float64))
    best = int(dist.argmin())
    return best if dist[best] <= SAME_PERSON else None


def own_faces(analyses: Sequence[Any], labels: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray
              ) -> list[int | None]:
    """Per photo, the index of its face nearest to its own person's rows of ``bank``, if within
    :data:`SAME_PERSON` (None: no face, none of theirs, or their person has no row)."""
    out: list[int | None] = []
    for a, label in zip(analyses, np.asarray(labels)):
        theirs = bank[np.asarray(bank_labels) == int(label)]
        if a is None or a.descriptors is None or len(a.descriptors) == 0 or len(theirs) == 0:
            out.append(None)
            continue
        out.append(face_like(a.descriptors, theirs))
    return out


#: How :func:`stranger_distances` measures a stranger, named in the card.
STRANGERS_METHOD = ("leave-one-person-out on training and validation: each photo against the bank without its "
                    "own person")
PICTURES_METHOD = ("a picture's cosine distance to the nearest training photo, in the pooled features of the "
                   "fallback's frozen backbone")


def stranger_distances(analyses: Sequence[Any], labels: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray,
                       max_distance: float) -> np.ndarray:
    """The face distance the model's rule would score for each photo (with a described face) if
    its person were a stranger: the photo's faces against the bank rows of the *other* people,
    the face chosen as :func:`choose_face` chooses it (the largest within ``max_distance``, else
    the closest). Sorted ascending. A photo of a known person seen without its own person's
    faces is the nearest thing to a stranger a labelled folder holds, so the share of these a
    threshold accepts is the share of strangers it lets through. The bank is not trained (dlib's
    descriptors), so a training photo measured without its person is as unseen as a validation
    photo: every one of them is measured (on the athletes, about 305 faces instead of 54; on 12
    people of 8 photos, 84 instead of 12, a photo each)."""
    out = []
    bank_labels = np.asarray(bank_labels)
    for a, label in zip(analyses, np.asarray(labels)):
        if a is None or a.descriptors is None or len(a.descriptors) == 0:
            continue
        others = bank[bank_labels != int(label)]
        if len(others) == 0:
            continue
        out.append(choose_face(a.descriptors, others, max_distance)[1])
    return np.sort(np.asarray(out, dtype=np.float64))


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


@dataclass
class FoldAnswers:
    """A face model's out-of-fold answers over the training and validation photos, for a grid of
    settings (arrays (repeats, images, classes))."""

    #: Per C: the head's answers for the face within :data:`SAME_PERSON` of the fold's bank, and
    #: where there is one ((repeats, images) bool).
    face: dict[float, tuple[np.ndarray, np.ndarray]]
    #: Per (C, max_distance): the whole model's answers (the fallback's where no face decides).
    whole: dict[tuple[float, float], np.ndarray]


def face_oof_grid(analyses: Sequence[Any], labels: Sequence[int], folds: Sequence[Fold], num_classes: int,
                  fallback: np.ndarray, c_grid: Sequence[float], distance_grid: Sequence[float],
                  alone_within: float = float("inf"), *, progress: bool = False) -> FoldAnswers:
    """Per fold, the bank of the training part's labelled faces and a head per C are refitted, and
    the model's own rule decides which face answers at each max_distance (beyond ``alone_within``,
    together with the fallback); where none does, the fallback's out-of-fold probabilities
    (``fallback``, (repeats, images, classes)) answer. ``analyses``: per photo what the face
    pipeline found (a :class:`~image_classifier.faces.FaceAnalysis`, or None)."""
    y = np.asarray(labels, dtype=np.int64)
    fallback = np.asarray(fallback, dtype=np.float64)
    face = {c: (np.zeros_like(fallback), np.zeros(fallback.shape[:2], dtype=bool)) for c in c_grid}
    whole = {(c, d): fallback.copy() for c in c_grid for d in distance_grid}
    limits = sorted({*distance_grid, SAME_PERSON})
    for f in tqdm(folds, desc="face head: C and max distance by folds", unit="fold", disable=not progress,
                  leave=False):
        chosen = labelled_faces([analyses[i] for i in f.train], y[f.train])
        rows = [(i, k) for i, k in zip(f.train, chosen) if k is not None]
        if len({int(y[i]) for i, _ in rows}) < 2:
            continue  # too few labelled faces in this part: the fallback answers every photo
        bank = np.stack([analyses[i].descriptors[k] for i, k in rows]).astype(np.float64)
        # Which face decides each test photo at each limit (the same for every C).
        picks = {}
        for limit in limits:
            found = [(i, *choose_face(None if analyses[i] is None else analyses[i].descriptors, bank, limit))
                     for i in f.test]
            picks[limit] = [(i, k, d) for i, k, d in found if k is not None]
        for c in c_grid:
            weight, bias, mean, scale = standardised_lr(bank, y[[i for i, _ in rows]], num_classes, c)
            head = FaceHead(weight, bias, mean, scale, bank, np.inf)
            for limit, decided in picks.items():
                if not decided:
                    continue
                at = [i for i, _, _ in decided]
                probs = head.probabilities(np.stack([analyses[i].descriptors[k] for i, k, _ in decided]))
                if limit == SAME_PERSON:
                    face[c][0][f.repeat, at] = probs
                    face[c][1][f.repeat, at] = True
                if limit in distance_grid:
                    distances = np.array([d for _, _, d in decided])
                    whole[(c, limit)][f.repeat, at] = face_answers(probs, distances, fallback[f.repeat, at],
                                                                   alone_within)
    return FoldAnswers(face, whole)


def face_model_oof(analyses: Sequence[Any], labels: Sequence[int], folds: Sequence[Fold], num_classes: int,
                   fallback: np.ndarray, *, c: float, max_distance: float,
                   alone_within: float = float("inf")) -> np.ndarray:
    """Out-of-fold answers (repeats, images, classes) of a face model with these settings (see
    :func:`face_oof_grid`): what ``compare`` weighs besides the validation split."""
    return face_oof_grid(analyses, labels, folds, num_classes, fallback, (c,), (max_distance,),
                         alone_within).whole[(c, max_distance)]


@dataclass
class FaceSettings:
    """The face head's L2 strength ``c`` and the largest distance at which a face decides, as
    chosen, with every value tried and its score (the card's ``head`` and ``max_distance_selection``)."""

    c: float
    max_distance: float
    c_selected_by: str
    max_distance_selected_by: str
    tried_c: list[dict[str, Any]]
    tried_d: list[dict[str, Any]]


#: How the settings are chosen, in the card.
BY_FOLDS = (f"{REPEATS} x {FOLDS} folds of the training and validation photos (duplicate groups kept together), "
            "the no-face fallback stood for by a linear head on its frozen features")


def _mean_nll(probs: np.ndarray, labels: np.ndarray, where: np.ndarray | None = None) -> tuple[float, float]:
    """(mean log-loss, accuracy) of (repeats, images, classes) answers, over ``where`` (default all)."""
    y = np.broadcast_to(labels, probs.shape[:2])
    where = np.ones(probs.shape[:2], dtype=bool) if where is None else where
    p, t = probs[where], y[where]
    return _nll(p, t), float((p.argmax(1) == t).mean())


def choose_settings(records: Sequence[Any], analyses: Sequence[Any], num_classes: int, features: FrozenFeatures,
                    seed: int, *, progress: bool = False) -> FaceSettings:
    """C and max_distance chosen on 5 x 2 folds of the training and validation photos (``records``,
    with their face ``analyses``), not on the validation split alone: a few dozen validation faces
    let one photo move C from 0.1 to 100 (athletes, seed 0). C: the lowest out-of-fold log-loss of
    the head's answers for the faces within :data:`SAME_PERSON` of the training faces (ties: the
    smaller C); max_distance: the lowest out-of-fold log-loss of the whole model at that C (ties: the
    larger, faces decide more often). Measured on the athletes (split seeds 0-4), each way of
    choosing nested inside 2 x 5 outer folds of train + validation, the held-out part the size of
    the validation split (about 60 photos): out-of-fold accuracy 0.954 chosen on the held-out part,
    0.959 on folds, better on 4 seeds of 5, log-loss 0.165 -> 0.126; the held-out part chose C from
    0.01 to 100 and max_distance from 0.45 to any, the folds mostly C 0.3 to 1 and 0.55. The test
    split is never read."""
    labels = np.array([r.label for r in records], dtype=np.int64)
    x, kept = features.compute(records)  # a photo that does not decode has no fallback answer: left out
    labels, groups = labels[kept], [records[i].group for i in kept]
    try:
        folds = repeated_folds(labels, groups, seed=seed)
    except ValueError as err:
        why = f"the middle of the grid and dlib's same-person distance (no folds: {err})"
        log.warning("face head: %s", why)
        return FaceSettings(C_GRID[len(C_GRID) // 2], SAME_PERSON, why, why, [], [])
    fallback = linear_probe_oof(x, labels, folds, num_classes)
    answers = face_oof_grid([analyses[i] for i in kept], labels, folds, num_classes, fallback, C_GRID,
                            MAX_DISTANCE_GRID, ALONE_WITHIN, progress=progress)
    tried_c: list[dict[str, Any]] = []
    best_c, best_loss = C_GRID[len(C_GRID) // 2], float("inf")  # no face to choose on: the middle
    for c in C_GRID:
        probs, found = answers.face[c]
        if not found.any():
            continue
        loss, acc = _mean_nll(probs, labels, found)
        tried_c.append({"C": c, "cv_face_loss": round(loss, 5), "cv_face_accuracy": round(acc, 5)})
        if loss < best_loss - 1e-9:
            best_c, best_loss = c, loss
    tried_d: list[dict[str, Any]] = []
    best_d, best_loss = MAX_DISTANCE_GRID[-1], float("inf")
    for limit in MAX_DISTANCE_GRID:
        loss, acc = _mean_nll(answers.whole[(best_c, limit)], labels)
        tried_d.append({"max_distance": None if np.isinf(limit) else limit, "cv_loss": round(loss, 5),
                        "cv_accuracy": round(acc, 5)})
        if loss <= best_loss + 1e-9:
            best_d, best_loss = limit, loss
    return FaceSettings(best_c, best_d, f"log-loss of the faces matching a training face, {BY_FOLDS}",
                    f"log-loss of the whole model, {BY_FOLDS}", tried_c, tried_d)


def _fallback_probs(net: torch.nn.Module, prep: Preprocessing, images: torch.Tensor) -> np.ndarray:
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            logits = net(prep.normalize(images[start:start + 64])).float()
            out.append(torch.softmax(logits, 1).numpy())
    return np.concatenate(out)


def fit_face_head(net: torch.nn.Module, train_records: Sequence[Any], val_records: Sequence[Any],
                  val_set: Any, prep: Preprocessing, num_classes: int, cache: FaceCache, features: FrozenFeatures,
                  seed: int, *, progress: bool = False) -> FaceHeadFit:
    """Fit the face head of ``net`` (written into its buffers) and score the whole model on validation.

    ``val_set`` is the decoded validation subset (:class:`~image_classifier.training.cache.DecodedSet`)
    the fallback network was validated on; validation photos that did not decode are left out.
    ``features`` are the fallback's frozen backbone's (the folds' stand-in for the fallback: see
    :func:`choose_settings`), ``seed`` shuffles the folds.
    """
    t0 = time.perf_counter()
    sha = weights_sha256()  # fails early, naming the package, when the face weights are missing
    train_a = _analyses(train_records, cache, progress, "faces (train)")
    val_a = _analyses(val_records, cache, progress, "faces (val)")
    analyse_seconds = time.perf_counter() - t0

    train_y = np.array([r.label for r in train_records], dtype=np.int64)
    chosen = labelled_faces(train_a, train_y)
    kept = [i for i, c in enumerate(chosen) if c is not None]
    if len({int(train_y[i]) for i in kept}) < 2:
        raise DatasetError(
            f"face_embedding needs faces in the training images of at least two classes; faces were found in "
            f"{_with_face(train_a)} of {len(train_records)} training "
            "images. Use the CNNs for this folder (compare --models without face_embedding)")
    bank = np.stack([train_a[i].descriptors[chosen[i]] for i in kept]).astype(np.float64)
    y = train_y[kept]
    mean, scale = bank.mean(0), bank.std(0) + 1e-6

    # Validation photos that decoded (the fallback's rows), their labels and fallback probabilities.
    row_of = {p: k for k, p in enumerate(val_set.rel_paths)}
    val_idx = [i for i, r in enumerate(val_records) if r.rel_path in row_of]
    yv = np.array([val_records[i].label for i in val_idx], dtype=np.int64)
    fallback = _fallback_probs(net, prep, val_set.images[torch.tensor([row_of[val_records[i].rel_path]
                                                                        for i in val_idx])])
    # Which face of each validation photo decides at a given max_distance (the model's own rule).
    def deciding(limit: float) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(positions in val_idx where a face decides, their descriptors, their distances to the bank)."""
        rows, descriptors, distances = [], [], []
        for k, i in enumerate(val_idx):
            a = val_a[i]
            face, distance = (None, None) if a is None else choose_face(a.descriptors, bank, limit)
            if face is not None:
                rows.append(k)
                descriptors.append(a.descriptors[face])
                distances.append(distance)
        return rows, (np.stack(descriptors).astype(np.float64) if descriptors else np.empty((0, bank.shape[1]))), \
            np.asarray(distances, dtype=np.float64)

    settings = choose_settings(list(train_records) + list(val_records), list(train_a) + list(val_a), num_classes,
                               features, seed, progress=progress)
    best_c, max_distance = settings.c, settings.max_distance
    weight, bias = fit_linear_head(bank, y, num_classes, best_c, mean, scale)
    # The whole model's validation score (what compare ranks it by), each photo answered as a loaded
    # model answers it (see FacePath.answers_with_fallback).
    val_probs = fallback.copy()
    decided_rows, xd, distances = deciding(max_distance)
    if decided_rows:
        face = FaceHead(weight, bias, mean, scale, bank, max_distance).probabilities(xd)
        val_probs[decided_rows] = face_answers(face, distances, fallback[decided_rows], ALONE_WITHIN)
    val_loss, val_acc = _nll(val_probs, yv), float((val_probs.argmax(1) == yv).mean())
    decided = len(decided_rows)
    # Step 4: the validation photos' own faces join the bank (the head stays fitted on the training faces).
    val_y = np.array([r.label for r in val_records], dtype=np.int64)
    joined = [(i, f) for i, f in enumerate(own_faces(val_a, val_y, bank, y)) if f is not None]
    full_bank = np.vstack([bank, *(val_a[i].descriptors[f][None] for i, f in joined)]).astype(np.float64)
    full_labels = np.concatenate([y, val_y[[i for i, _ in joined]]]).astype(np.int64)
    sources = [train_records[i].sha256 for i in kept] + [val_records[i].sha256 for i, _ in joined]
    head = FaceHead(weight, bias, mean, scale, full_bank, max_distance)
    head.write_to(net)
    strangers = stranger_distances(list(train_a) + list(val_a), np.concatenate([train_y, val_y]), full_bank,
                                   full_labels, max_distance)
    # The picture bank: the training photos' pooled fallback features (its backbone is never
    # trained, so the cached frozen features are what the loaded model computes): what the "none
    # of these" rule measures the photos in which no face is found against (see inference.rejection).
    train_features, train_kept = features.compute(train_records)
    pictures = unit_rows(train_features)
    net.register_buffer("picture_bank", torch.as_tensor(pictures, dtype=torch.float32))
    # Step 6: the rule's references, every training and validation photo left out of the banks.
    everyone = list(train_records) + list(val_records)
    references = {
        "faces": face_references(everyone, list(train_a) + list(val_a), full_bank, sources, max_distance),
        "pictures": picture_references([train_records[i] for i in train_kept], pictures,
                                             features.compute(val_records)[0])}
    log.info("face head: C=%g, max distance %s; %d of %d training photos show their person's face; "
             "validation: a face decides %d of %d, whole model accuracy %.3f, loss %.4f", best_c,
             max_distance, len(kept), len(train_records), decided, len(val_idx), val_acc, val_loss)
    card = {
        "weights_sha256": sha,
        "head": {"kind": "logistic_regression", "C": best_c, "selected_by": settings.c_selected_by,
                 "tried": settings.tried_c},
        "bank": {"faces": len(full_bank), "same_person_distance": SAME_PERSON,
                 "train_photos_without_their_face": len(train_records) - len(kept),
                 "validation_faces": len(joined),
                 # Whose face each bank row is (class index): what `add` refits the head on.
                 "labels": [int(v) for v in full_labels],
                 # Which photo each row came from: a photo is measured against the others (step 4).
                 "sources": sources},
        # Known faces as a stranger shows them: each training and validation photo against the
        # bank without its own person's faces (what --keep trades; see stranger_distances).
        "strangers": {"method": STRANGERS_METHOD, "distances": [round(float(v), 6) for v in strangers]},
        "pictures": {"bank": len(pictures), "method": PICTURES_METHOD},
        # What the "none of these" rule keeps ``keep`` of (step 6): the face distances of the photos
        # with a face, the picture distances of every photo.
        "references": {"method": REFERENCES_METHOD,
                       **{kind: [round(float(v), 6) for v in values] for kind, values in references.items()}},
        "max_distance": None if np.isinf(max_distance) else max_distance,
        "max_distance_selection": {"selected_by": settings.max_distance_selected_by, "tried": settings.tried_d},
        # A deciding face further than this answers together with the fallback (with_fallback).
        "alone_within": ALONE_WITHIN,
        "detection": {"train": _detection(train_a), "val": _detection(val_a)},
        "val_faces_decide": decided,
        "seconds": round(time.perf_counter() - t0, 3),
        "analyse_seconds": round(analyse_seconds, 3),
    }
    return FaceHeadFit(head, val_loss, val_acc, card)


@dataclass
class AfterTraining:
    """What a kind's step after its network is trained (:data:`AFTER_TRAINING`) changes: the run's
    ``best`` entry (the whole model's validation scores), the card keys it adds and its
    architecture options."""

    best: dict[str, Any]
    card: dict[str, Any]
    arch_options: dict[str, Any]


def face_model_after_training(net: torch.nn.Module, train_records: Sequence[Any], val_records: Sequence[Any],
                              val_set: Any, prep: Preprocessing, num_classes: int, cache: FaceCache,
                              best: dict[str, Any], *, arch: str, weights: str | os.PathLike | None,
                              image_cache: ImageCache, seed: int, progress: bool = False) -> AfterTraining:
    """The network trained is the no-face fallback; now the face head, and the whole model's
    validation score (what compare ranks it by). ``arch``'s frozen ImageNet backbone (its
    ``weights``) gives the features that stand for the fallback in the folds that choose the head's
    settings, cached beside ``image_cache``'s images, as ``compare``'s evidence caches them."""
    features = FrozenFeatures(arch, weights, image_cache.root, image_cache, progress=progress)
    fit = fit_face_head(net, train_records, val_records, val_set, prep, num_classes, cache, features, seed,
                        progress=progress)
    best = {**best, "fallback_val_loss": best["val_loss"], "fallback_val_accuracy": best["val_accuracy"],
            "val_loss": fit.val_loss, "val_accuracy": fit.val_accuracy,
            "inference_val_loss": fit.val_loss, "inference_val_accuracy": fit.val_accuracy}
    # The bank's size shapes a buffer: the rebuilt network needs it.
    return AfterTraining(best, {"faces": fit.card}, {"face_bank_size": fit.card["bank"]["faces"],
                                                     "picture_bank_size": fit.card["pictures"]["bank"]})


#: Per architecture family, the step after the network is trained (a kind without one has none):
#: a new kind that needs one adds an entry here.
AFTER_TRAINING = {"face": face_model_after_training}
