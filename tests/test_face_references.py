"""The "none of these" rule's references of a face model: each training and validation photo
measured against the banks without its own duplicate group (training.face_references)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from image_classifier.models.face_embedding import unit_rows
from image_classifier.training.face_references import face_references, group_shas, picture_references


def _record(sha: str, group: int = -1) -> SimpleNamespace:
    return SimpleNamespace(sha256=sha, group=group)


def _faces(*rows: list[float]) -> SimpleNamespace:
    return SimpleNamespace(descriptors=np.asarray(rows, dtype=np.float64) if rows else None)


def test_a_photo_is_measured_without_its_own_duplicate_group():
    # a and its copy b are one group: each is measured against c, not against the other (distance 0).
    records = [_record("a", group=3), _record("b", group=3), _record("c"), _record("d")]
    analyses = [_faces([0.0, 0.0]), _faces([0.0, 0.0]), _faces([3.0, 4.0]), _faces()]
    bank = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    refs = face_references(records, analyses, bank, ["a", "b", "c"], max_distance=10.0)
    # a -> c: 5, b -> c: 5, c -> a or b: 5; d has no face.
    assert refs.tolist() == [5.0, 5.0, 5.0]
    assert group_shas(records) == [{"a", "b"}, {"a", "b"}, {"c"}, {"d"}]


def test_the_distance_is_the_one_the_model_scores_the_deciding_face_else_the_closest():
    records = [_record("p"), _record("q")]
    # Faces come largest first. p's larger face is within max_distance of the bank: it decides,
    # though its second face is nearer. None of q's is within it: the closest counts.
    analyses = [_faces([0.3, 0.0], [0.1, 0.0]), _faces([0.8, 0.0], [0.6, 0.0])]
    refs = face_references(records, analyses, np.array([[0.0, 0.0]]), ["x"], max_distance=0.5)
    assert refs.tolist() == pytest.approx([0.3, 0.6])


def test_pictures_training_photos_leave_their_group_out_validation_photos_see_the_whole_bank():
    train = [_record("a", group=0), _record("b", group=0), _record("c")]
    bank = unit_rows(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    val = np.array([[1.0, 1.0]])
    refs = picture_references(train, bank, val)
    # a and b are copies (cosine distance 0 to each other): each against c only (distance 1);
    # c against a, b (1); the validation photo against the nearest of all (1 - cos 45 degrees).
    assert refs.tolist() == pytest.approx(sorted([1.0, 1.0, 1.0, 1 - np.sqrt(0.5)]))
