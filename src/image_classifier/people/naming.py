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
:func:`~image_classifier.people.grouping.group_photos` (which itself never imports torch).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from image_classifier.errors import ModelFormatError
from image_classifier.faces.clustering import SAME_PERSON_DISTANCE
from image_classifier.inference.face_model import FaceClassifier
from image_classifier.inference.kinds import open_classifier
from image_classifier.people.grouping import GroupName
from image_classifier.runs import is_model_dir, models_of_run, resolve_model_dir

FACE_MODEL = "face_embedding"
#: A group is named after a class when more than this share of its faces are that class.
MAJORITY = 0.5


def face_model_dir(path: str | os.PathLike) -> Path:
    """The face model of a model directory, or of a ``compare`` run (its ``face_embedding``)."""
    path = Path(path)
    if not is_model_dir(path):
        models = models_of_run(path)
        if FACE_MODEL in models:
            return models[FACE_MODEL]
    return resolve_model_dir(path)


def open_face_model(path: str | os.PathLike) -> FaceClassifier:
    """The face model at ``path`` on the plain PyTorch backend (only its face half is used)."""
    model_dir = face_model_dir(path)
    model = open_classifier(model_dir, "torch")
    if not isinstance(model, FaceClassifier):
        raise ModelFormatError(
            f"{model_dir} is not a face model: --model needs a {FACE_MODEL} model (compare trains one for "
            f"a folder of people: pass runs/NAME or runs/NAME/models/{FACE_MODEL})")
    return model


def name_group(model: FaceClassifier, descriptors: np.ndarray) -> GroupName:
    """The class most of a group's faces are, when more than :data:`MAJORITY` of them are."""
    labels = model.name_faces(descriptors, SAME_PERSON_DISTANCE)
    counts = Counter(label for label in labels if label is not None)
    known = sum(counts.values())
    if not counts:
        return GroupName(None, 0.0, 0, len(labels))
    label, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    share = n / len(labels)
    return GroupName(label if share > MAJORITY else None, share, known, len(labels))


class ModelNamer:
    """Names groups with the face model at ``path`` (a model directory or a ``compare`` run)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.model = open_face_model(path)
        self.source = os.fspath(face_model_dir(path))

    def __call__(self, descriptors: np.ndarray) -> GroupName:
        return name_group(self.model, descriptors)
