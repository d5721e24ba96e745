"""Naming groups with a trained face model (``group --model MODEL_DIR``).

Each face of a group is asked of the model's face half the way ``predict`` asks it: the face must
be within the model's ``max_distance`` of a training face (its bank), its rejection rule must
accept that distance (the card's "none of these" rule, fitted on validation), and then the face
head's most probable class is the face's person. Naming a group is a stronger claim than one
prediction, so the face must also be within dlib's same-person distance (0.6) of a training
face: a model validated on a handful of photos can have a rule that rejects nothing
(``max_distance`` infinite, a rule that keeps its 6 validation faces whatever the threshold), and
would name any stranger. A group takes a class's name when more than half
of its faces are that class; otherwise it stays a new person.

:class:`ModelNamer` is what ``group --model`` passes to
:func:`~image_classifier.people.grouping.group_photos` (which itself never imports torch); it asks
the model for its ``face_namer`` and never what kind of model it is.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from image_classifier.card import read_card
from image_classifier.errors import OptionError
from image_classifier.faces.thresholds import SAME_PERSON_DISTANCE
from image_classifier.inference.kinds import open_classifier
from image_classifier.people.grouping import GroupName
from image_classifier.runs import is_model_dir, models_of_run, resolve_model_dir

#: A group is named after a class when more than this share of its faces are that class.
MAJORITY = 0.5


def naming_model_dir(path: str | os.PathLike) -> Path:
    """The model directory ``path`` names: itself, or for a ``compare`` run the one of its models
    that answers from faces (its card says so), else the run's best model (which
    :meth:`~image_classifier.inference.model.Model.face_namer` then refuses, saying what to pass)."""
    path = Path(path)
    if is_model_dir(path):
        return path
    by_faces = [d for d in models_of_run(path).values() if read_card(d).finds_faces]
    if len(by_faces) > 1:
        raise OptionError(f"{path} holds {len(by_faces)} models that answer from faces "
                          f"({', '.join(d.name for d in by_faces)}): pass the one to name groups with, "
                          f"e.g. --model {by_faces[0]}")
    return by_faces[0] if by_faces else resolve_model_dir(path)


def name_group(name_faces: Callable[[np.ndarray], list[str | None]], descriptors: np.ndarray) -> GroupName:
    """The class most of a group's faces are (``name_faces``: a model's
    :meth:`~image_classifier.inference.model.Model.face_namer`), when more than :data:`MAJORITY` of them are."""
    labels = name_faces(descriptors)
    counts = Counter(label for label in labels if label is not None)
    known = sum(counts.values())
    if not counts:
        return GroupName(None, 0.0, 0, len(labels))
    label, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    share = n / len(labels)
    return GroupName(label if share > MAJORITY else None, share, known, len(labels))


class ModelNamer:
    """Names groups with the model at ``path`` (a model directory or a ``compare`` run), opened on the
    plain PyTorch backend; a model that cannot name faces is refused here, before any grouping."""

    def __init__(self, path: str | os.PathLike) -> None:
        model_dir = naming_model_dir(path)
        self.name_faces = open_classifier(model_dir, "torch").face_namer(SAME_PERSON_DISTANCE)
        self.source = os.fspath(model_dir)

    def __call__(self, descriptors: np.ndarray) -> GroupName:
        return name_group(self.name_faces, descriptors)
