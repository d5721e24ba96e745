"""One row per photo and one row per face: the columns of ``sort``'s ``predictions.csv`` and
``faces.csv``, and of ``model.predict_frame`` / ``predict_folder`` (the same columns, as a pandas
DataFrame when pandas is installed).

A photo row says what the model answers for the whole photo (``label``: a class or ``unknown``),
the probability of its most probable class (``closest``, shown also when the answer is unknown),
how many faces were found and, for a face model, which face decided (its ``face_box`` in the
photo's own pixels, ``x0 y0 x1 y1``, and its index among the faces, largest first). A face row
(face models only) is one face's own answer: every face found in a group photo is named or
``unknown``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from image_classifier.inference.rejection import UNKNOWN
from image_classifier.results import _pandas

#: The columns of ``predictions.csv`` (one row per photo), in order.
PHOTO_COLUMNS = ("path", "label", "probability", "closest", "faces_found", "face_box", "face_index",
                 "face_distance", "picture_distance", "model", "sha256")
#: The columns of ``faces.csv`` (one row per face found by a face model), in order.
FACE_COLUMNS = ("path", "face", "box", "label", "probability", "closest", "distance", "decided", "model", "sha256")


def box_text(box: Sequence[float] | None) -> str:
    """``x0 y0 x1 y1`` (one CSV cell), or "" for no box."""
    return "" if box is None else " ".join(f"{float(v):.1f}" for v in box)


def photo_row(path: str | None, probabilities: np.ndarray, detail: Mapping[str, Any], classes: Sequence[str],
              model: str, sha256: str | None) -> dict[str, Any]:
    """The ``predictions.csv`` row of one photo, from its probabilities and its
    :meth:`~image_classifier.inference.classifier.Classifier.predict_details` dict."""
    best = int(np.asarray(probabilities).argmax())
    closest = classes[best]
    return {
        "path": path,
        "label": UNKNOWN if detail.get("unknown") else closest,
        "probability": round(float(probabilities[best]), 6),
        "closest": closest,
        "faces_found": detail.get("faces_found"),
        "face_box": box_text(detail.get("face")),
        "face_index": detail.get("face_index"),
        "face_distance": detail.get("face_distance"),
        "picture_distance": detail.get("picture_distance"),
        "model": model,
        "sha256": sha256,
    }


def face_rows(path: str | None, detail: Mapping[str, Any], model: str, sha256: str | None) -> list[dict[str, Any]]:
    """The ``faces.csv`` rows of one photo: one per face a face model found (none for a CNN)."""
    rows = []
    for i, face in enumerate(detail.get("faces") or []):
        closest = face.get("closest") or {}
        rows.append({
            "path": path, "face": i, "box": box_text(face.get("box")), "label": face.get("label"),
            "probability": None if face.get("probability") is None else round(float(face["probability"]), 6),
            "closest": closest.get("label"), "distance": face.get("distance"), "decided": bool(face.get("decided")),
            "model": model, "sha256": sha256,
        })
    return rows


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Any:
    """``rows`` as a pandas DataFrame with ``columns`` when pandas is installed, else a list of dicts."""
    rows = [dict(r) for r in rows]
    pd = _pandas()
    return pd.DataFrame(rows, columns=list(columns)) if pd is not None else rows
