"""How many strangers each candidate would accept, measured on the validation images only: the
"none of these" part of choosing the model to serve a folder of people.

Strangers come in **trials**, each with its own known images:

* with ``compare --unknown DIR``, one trial: the validation images are the known ones and the
  *validation half* of DIR's images the strangers (the other half is kept for the test split's
  measurement), scored by every model as it is saved;
* without, one trial per class c (**leave-one-class-out on validation**): the known images are the
  validation images of the other classes, the strangers those of c in which a face is found (a
  stranger is a person: a photo of one shows a face), each model scored as if it had never seen c.
  A CNN's head is refitted on its penultimate features of the other classes' training images
  (:func:`~image_classifier.evaluate.rejection.fit_softmax_head`); the face model's bank loses c's
  faces (the score of a face is its distance to the nearest training face of the other people).

Per trial and model, every image gets a conformal p-value against that trial's known images of
its own score kind (higher: more like a known class), so a cascade or an ensemble combines its
members' p-values image by image, as its saved rule does (:mod:`image_classifier.inference.rejection`).
A candidate accepts a stranger when its combined p-value keeps it at the rule's ``keep``: the rule
is placed on the trial's known images, so it keeps ``keep`` of them by construction
(:func:`strangers_accepted`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from image_classifier.evaluate.rejection import fit_softmax_head, head_probabilities
from image_classifier.inference.rejection import FACE_DISTANCE, MAX_PROBABILITY, RejectionRule
from image_classifier.models.face_embedding import choose_face


@dataclass
class Trial:
    """One showing of strangers (see the module docstring): every model's p-values of the same
    known images and the same strangers."""

    label: str
    known: np.ndarray  # indices of the known images (into the validation images)
    strangers: np.ndarray  # indices of the strangers (into the validation images, or the unknown folder's)
    left_out: int | None = None  # leave-one-class-out: the class playing the strangers
    known_p: dict[str, np.ndarray] = field(default_factory=dict)  # model -> (known,)
    strangers_p: dict[str, np.ndarray] = field(default_factory=dict)  # model -> (strangers,)


def conformal_p_values(references: np.ndarray, values: np.ndarray, kind: str) -> np.ndarray:
    """The share of ``references`` (scores of known images) that look no more like a known class
    than each value does (``kind`` gives the direction, as the rejection rule's)."""
    rule = RejectionRule(0.5, "p_value", {kind: np.sort(np.asarray(references, dtype=np.float64))}, 0.5)
    return rule.p_values([kind] * len(values), np.asarray(values, dtype=np.float64))


def fill_p_values(trial: Trial, model: str, known_values: np.ndarray, known_kinds: Sequence[str],
                  stranger_values: np.ndarray, stranger_kinds: Sequence[str]) -> None:
    """Set ``model``'s p-values in ``trial`` from raw scores (a probability or a distance per
    image, ``*_kinds`` saying which): each against the trial's known scores of the same kind."""
    known_values = np.asarray(known_values, dtype=np.float64)
    kinds = np.asarray(known_kinds)
    # A kind without known scores gets p = 1, as in the rejection rule.
    rule = RejectionRule(0.5, "p_value", {k: np.sort(known_values[kinds == k]) for k in set(known_kinds)}, 0.5)
    trial.known_p[model] = rule.p_values(known_kinds, known_values)
    trial.strangers_p[model] = rule.p_values(stranger_kinds, stranger_values)


# ---- leave-one-class-out on validation ------------------------------------------------------------

def loco_trials(val_labels: np.ndarray, val_face: np.ndarray, classes: Sequence[str]) -> list[Trial]:
    """One trial per class that has a stranger (a validation image of it showing a face)."""
    y = np.asarray(val_labels, dtype=np.int64)
    face = np.asarray(val_face, dtype=bool)
    trials = []
    for c in range(len(classes)):
        known = np.flatnonzero(y != c)
        strangers = np.flatnonzero((y == c) & face)
        if len(strangers) and len(known):
            trials.append(Trial(f"{classes[c]} left out", known, strangers, left_out=c))
    return trials


def cnn_loco(trials: Sequence[Trial], model: str, train: tuple[np.ndarray, np.ndarray], val_features: np.ndarray
             ) -> bool:
    """Fill ``model``'s p-values in every leave-one-class-out trial from its penultimate features
    (``train``: features and labels of a sample of training images). False (nothing filled) when
    a trial has fewer than two known classes to refit a head on."""
    x_train, y_train = train
    if any(len(np.unique(y_train[y_train != t.left_out])) < 2 for t in trials):
        return False
    for t in trials:
        c = t.left_out
        others = sorted(set(np.unique(y_train).tolist()) - {c})
        remap = {k: i for i, k in enumerate(others)}
        mask = y_train != c
        head = fit_softmax_head(x_train[mask], np.array([remap[int(v)] for v in y_train[mask]]), len(others))
        known = head_probabilities(head, val_features[t.known]).max(axis=1)
        strangers = head_probabilities(head, val_features[t.strangers]).max(axis=1)
        fill_p_values(t, model, known, [MAX_PROBABILITY] * len(known), strangers, [MAX_PROBABILITY] * len(strangers))
    return True


def face_loco(trials: Sequence[Trial], model: str, bank: np.ndarray, bank_labels: np.ndarray,
              val_descriptors: Sequence[np.ndarray | None], max_distance: float, real_p: np.ndarray) -> None:
    """Fill a face model's p-values in every leave-one-class-out trial: an image with a face is
    scored by its distance to the bank without the left-out class's faces (the face the model's rule
    picks: the largest within ``max_distance``, else the closest); one without a face keeps the
    model's own p-value (``real_p``, from its fallback network and saved rule)."""
    bank_labels = np.asarray(bank_labels, dtype=np.int64)

    def distance(descriptors: np.ndarray | None, kept: np.ndarray) -> float | None:
        return None if descriptors is None or len(descriptors) == 0 else choose_face(descriptors, kept, max_distance)[1]

    for t in trials:
        kept = bank[bank_labels != t.left_out]
        known = [distance(val_descriptors[i], kept) for i in t.known]
        face_refs = np.array([d for d in known if d is not None])
        known_p = np.array([conformal_p_values(face_refs, np.array([d]), FACE_DISTANCE)[0] if d is not None
                            else real_p[i] for d, i in zip(known, t.known)])
        strangers = [distance(val_descriptors[i], kept) for i in t.strangers]
        t.known_p[model] = known_p
        t.strangers_p[model] = np.array([conformal_p_values(face_refs, np.array([d]), FACE_DISTANCE)[0]
                                         if d is not None and len(face_refs) else 1.0 for d in strangers])


# ---- combining members, and the decision ---------------------------------------------------------

#: A candidate's score of a trial's images from its members' p-values: (trial, strangers?) -> scores.
Scorer = Callable[[Trial, bool], np.ndarray]


def single(model: str) -> Scorer:
    return lambda t, strangers: (t.strangers_p if strangers else t.known_p)[model]


def face_first(first: str) -> Scorer:
    """A face-first cascade's score: its face model's (``first``) p-value (as its saved rule scores it)."""
    return single(first)


def strangest(models: Sequence[str]) -> Scorer:
    """An ensemble's score: the smallest of its members' p-values (``member_p_value``)."""
    return lambda t, strangers: np.min([(t.strangers_p if strangers else t.known_p)[m] for m in models], axis=0)


def measurable(trials: Sequence[Trial], models: Sequence[str]) -> bool:
    """Whether every trial has p-values of all ``models``."""
    return bool(trials) and all(m in t.known_p for t in trials for m in models)


def strangers_accepted(trials: Sequence[Trial], scorer: Scorer, keep: float) -> np.ndarray:
    """Per stranger of every trial (in order), whether the candidate's rule, placed to keep ``keep``
    of the trial's known images, accepts it: its score is at least the known scores' ``1 - keep``
    quantile, interpolated between the two known images around it.

    Interpolated, not placed at a whole image as the saved rule is: a trial has fewer known images
    than the validation split (leave-one-class-out leaves a class out), and a rule that rejects whole
    images rejects none of fewer than ``1 / (1 - keep)`` (20 at keep 0.95). Such a trial would measure
    a rule that keeps every known image, looser than the one served, and count strangers the served
    rule turns away (measured: 4 people of 30 photos each, 3 of 20 strangers "accepted" by the face
    model, which turned away 25 of 25 strangers when sorting)."""
    out = []
    for t in trials:
        threshold = float(np.quantile(scorer(t, False), 1.0 - keep))
        out.extend(scorer(t, True) >= threshold)
    return np.array(out, dtype=bool)
