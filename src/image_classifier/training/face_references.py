"""The references of a face model's "none of these" rule: the scores of photos of known people that
the model has not seen, one per training and validation photo.

The rule is conformal (:mod:`image_classifier.inference.rejection`): a photo is kept when its
score is no stranger than that of ``1 - keep`` of its references. Fitted on the validation split
alone (a few dozen faces: 51 to 59 on the athletes), one photo moved the threshold: over split
seeds 0-4 the rule kept 94 to 100 % of the athletes' test faces and let 5.3 to 16.7 % of 150
strangers through at ``keep`` 0.95 (seed 2: 100 % and 16.7 %).

Every training photo can be such a reference too. Neither bank is trained: the face descriptors
are dlib's and the picture features the fallback's frozen ImageNet backbone's, so a photo measured
against a bank without its own rows is exactly a photo the bank has not seen (leave-one-out, as
cross-conformal prediction and jackknife+ use it). What is left out is the photo's whole
duplicate group (the split's ``group``): a byte-identical or re-cropped copy in the bank would put
it at distance 0, as no new photo can be. Over the same split seeds, the 305 to 313 references
kept 93 to 98 % of the known test faces and accepted 4.0 to 4.7 % of the strangers
(``docs/benchmarks.md``, "The rule's references").
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from image_classifier.models.face_embedding import choose_face, picture_distances

#: How the references were measured, named in the card.
REFERENCES_METHOD = ("every training and validation photo against the banks without its own duplicate "
                     "group (leave-one-group-out)")
#: The rule's ``fitted_on`` for these references ("keeps 95.1 % of the known training and validation photos").
FITTED_ON = "training and validation"


def group_shas(records: Sequence[Any]) -> list[set[str]]:
    """Per record (split records: ``sha256``, ``group``, -1 for none), the SHA-256s of its
    duplicate group among ``records`` (itself alone when it is in none)."""
    members: dict[int, set[str]] = {}
    for r in records:
        if r.group >= 0:
            members.setdefault(r.group, set()).add(r.sha256)
    return [members[r.group] if r.group >= 0 else {r.sha256} for r in records]


def face_references(records: Sequence[Any], analyses: Sequence[Any], bank: np.ndarray,
                    bank_sources: Sequence[str], max_distance: float) -> np.ndarray:
    """Each photo's face distance as the model scores it (:func:`choose_face`: the deciding face's,
    else the closest face's) to ``bank`` without the rows of its duplicate group (``bank_sources``:
    each row's photo's SHA-256). Photos without a described face, or with no row left to measure
    against, have none. Sorted ascending."""
    sources = np.asarray(bank_sources)
    out = []
    for shas, a in zip(group_shas(records), analyses):
        if a is None or a.descriptors is None or len(a.descriptors) == 0:
            continue
        others = bank[~np.isin(sources, list(shas))]
        if len(others):
            out.append(choose_face(a.descriptors, others, max_distance)[1])
    return np.sort(np.asarray(out, dtype=np.float64))


def picture_references(train_records: Sequence[Any], bank: np.ndarray, val_features: np.ndarray) -> np.ndarray:
    """The picture distance (:func:`picture_distances`) of each training photo to the picture bank
    without its duplicate group's rows (``bank``: one row per record of ``train_records``, in
    order), and of each validation photo (``val_features``) to the whole bank. Sorted ascending."""
    sources = np.asarray([r.sha256 for r in train_records])
    out = [picture_distances(val_features, bank)] if len(val_features) else []
    for row, shas in enumerate(group_shas(train_records)):
        others = bank[~np.isin(sources, list(shas))]
        if len(others):
            out.append(picture_distances(bank[row][None], others))
    return np.sort(np.concatenate(out)) if out else np.empty(0)
