"""Suspect labels: photos of a labelled folder of people that probably show someone else.

The faces of every photo are grouped into people with the folder names hidden
(:func:`~image_classifier.faces.clustering.cluster_faces`, the method of ``image-classifier
group``). A class's *person* is the group that holds most of its photos (at least half of those
with a grouped face). A photo is then suspect when none of its faces is its class's person, all
its faces are far from that person (no nearer to its centre than the distance at which a face
would have joined it, :data:`~image_classifier.faces.clustering.ATTACH_DISTANCE`), and

* ``another_class``: one of its faces is another class's person, and near it: closer to its
  centre than :data:`~image_classifier.faces.clustering.CORE_DISTANCE` (a Kobe Bryant photo filed
  under Maria Sharapova; a face in the crowd that merely resembles another class's person is not
  enough), or
* ``another_person``: its only face is in a group that is no class's person (the same team-mate
  or fan in several photos of the folder).

A photo whose faces are all singles (a face like no other in the folder) is never flagged: one
poor face is no evidence against its label. Nor is a photo with a face near its class's person
that the clustering put elsewhere: poor faces (occluded, blurred, turned) lie near the middle of
the descriptor space and can gather into a group of their own, and near the person is no
evidence against the label either. Nothing is flagged for a class without a person
(fewer than :data:`MIN_PERSON_SHARE` of its photos in one group): its folder has no majority to
disagree with.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import os
from pathlib import Path

import numpy as np
from PIL import Image

from image_classifier.data.decode import read_source
from image_classifier.errors import UnreadableImageError
from image_classifier.faces.clustering import SINGLE, ClusterParams, cluster_faces, main_faces
from image_classifier.faces.detect import FaceAnalysis
from image_classifier.faces.thumbnails import face_thumbnails, jpeg_bytes
from image_classifier.fileio import atomic_write_bytes

ANOTHER_CLASS = "another_class"
ANOTHER_PERSON = "another_person"
#: A class's person is the group holding at least this share of its photos with a grouped face.
MIN_PERSON_SHARE = 0.5


@dataclass(frozen=True)
class SuspectLabel:
    """One photo whose label is probably wrong, with the face that says so."""

    rel_path: str
    label: str  # the class folder it is filed under
    kind: str  # ANOTHER_CLASS or ANOTHER_PERSON
    face: int  # index of the face (largest first) that shows someone else
    box: tuple[float, float, float, float]
    shows: str | None  # the class whose person that face is (ANOTHER_CLASS), else None
    group_photos: int  # photos in that face's group
    distance: float  # the face's distance to its group's centre
    label_distance: float | None  # the nearest face's distance to the labelled class's person's centre

    def reason(self) -> str:
        if self.kind == ANOTHER_CLASS:
            return (f"face {self.face + 1} looks like {self.shows!r} (distance {self.distance:.2f} to that "
                    f"person's centre), no face looks like {self.label!r}")
        return (f"its only face is someone else's: a person in {self.group_photos} photos of the folder "
                f"who is no class's person")

    def to_json(self) -> dict[str, Any]:
        return {"path": self.rel_path, "label": self.label, "kind": self.kind, "shows": self.shows,
                "face": self.face, "box": [round(v, 1) for v in self.box], "group_photos": self.group_photos,
                "distance": round(self.distance, 4),
                "label_distance": None if self.label_distance is None else round(self.label_distance, 4),
                "reason": self.reason()}


@dataclass
class SuspectReport:
    """Every suspect photo, and the classes that have no person to compare with."""

    suspects: list[SuspectLabel]
    persons: dict[str, int | None]  # class -> its person's group (None: no majority)
    faces: int  # faces grouped

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.suspects]

    def render(self) -> str:
        if not self.suspects:
            return f"Suspect labels: none (faces of every photo grouped into people; {self.faces} faces)"
        lines = [f"Suspect labels: {len(self.suspects)} photos probably show someone other than their folder's person"]
        for s in self.suspects:
            lines.append(f"  {s.rel_path}: {s.reason()}")
        unclear = [c for c, g in self.persons.items() if g is None]
        if unclear:
            lines.append("  (not checked, no person in most of their photos: " + ", ".join(unclear) + ")")
        return "\n".join(lines)


def find_suspect_labels(records: Sequence[Any], analyses: Mapping[str, FaceAnalysis],
                        params: ClusterParams | None = None) -> SuspectReport:
    """Suspect labels of ``records`` (anything with ``rel_path`` and ``class_name``), from each
    photo's faces (``analyses``: rel_path -> analysis, as :class:`~image_classifier.faces.FaceSurvey`
    holds them)."""
    params = params or ClusterParams()
    rows: list[tuple[str, int]] = []  # (rel_path, face index) per described face
    vectors = []
    label_of = {r.rel_path: str(r.class_name) for r in records}
    for r in records:
        a = analyses.get(r.rel_path)
        if a is None or a.descriptors is None:
            continue
        for k, d in enumerate(a.descriptors):
            rows.append((r.rel_path, k))
            vectors.append(d)
    persons: dict[str, int | None] = {c: None for c in dict.fromkeys(label_of.values())}
    if not rows:
        return SuspectReport([], persons, 0)
    photos = [p for p, _ in rows]
    first = main_faces(photos, [analyses[p].faces[k].area for p, k in rows])
    clustering = cluster_faces(np.stack(vectors), photos, params, first=first)
    labels = clustering.labels
    groups_of: dict[str, set[int]] = {}
    for (path, _), g in zip(rows, labels):
        if g != SINGLE:
            groups_of.setdefault(path, set()).add(int(g))
    group_photos = Counter(g for gs in groups_of.values() for g in gs)
    for c in persons:
        counts = Counter(g for p, gs in groups_of.items() if label_of[p] == c for g in gs)
        grouped = sum(1 for p in groups_of if label_of[p] == c)
        if counts:
            g, m = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            if m >= MIN_PERSON_SHARE * grouped:
                persons[c] = g
    class_of_group: dict[int, str] = {}
    for c, g in persons.items():
        if g is not None:
            class_of_group.setdefault(g, c)  # one person filed as two classes: the first names it
    person_groups = {g for g in persons.values() if g is not None}
    faces_of: dict[str, list[int]] = {}
    for idx, (path, _) in enumerate(rows):
        faces_of.setdefault(path, []).append(idx)
    suspects: list[SuspectLabel] = []
    for r in records:
        own = persons.get(str(r.class_name))
        idx = faces_of.get(r.rel_path)
        if own is None or not idx:
            continue
        mine = [int(labels[i]) for i in idx]
        if own in mine:
            continue
        analysis = analyses[r.rel_path]
        centre = clustering.centres[own]
        label_distance = float(min(np.linalg.norm(np.asarray(analysis.descriptors[rows[i][1]], np.float64) - centre)
                                   for i in idx))
        if label_distance < params.attach_distance:
            continue  # a face near the class's person: no evidence against the label
        other = next((i for i in idx if int(labels[i]) in person_groups
                      and clustering.distances[i] < params.core_distance), None)
        kind = ANOTHER_CLASS
        if other is None and len(analysis.faces) == 1 and mine[0] != SINGLE:
            other, kind = idx[0], ANOTHER_PERSON
        if other is None:
            continue
        g = int(labels[other])
        face = rows[other][1]
        suspects.append(SuspectLabel(r.rel_path, str(r.class_name), kind, face, analysis.faces[face].box,
                                     class_of_group.get(g) if kind == ANOTHER_CLASS else None,
                                     group_photos[g], float(clustering.distances[other]), label_distance))
    return SuspectReport(suspects, persons, len(rows))


def suspect_thumbnails(suspects: Sequence[SuspectLabel],
                       paths: Mapping[str, str | os.PathLike]) -> dict[str, Image.Image]:
    """rel_path -> a thumbnail of the face that makes each photo suspect (``paths``: rel_path -> file);
    a photo that can no longer be read has none."""
    out: dict[str, Image.Image] = {}
    for s in suspects:
        try:
            data, path = read_source(paths[s.rel_path])
            out[s.rel_path] = face_thumbnails(data, [s.box], path=path)[0]
        except (UnreadableImageError, KeyError):
            continue
    return out


def suspect_entries(records: Sequence[Any], analyses: Mapping[str, FaceAnalysis], folder: Path,
                    root: Path) -> list[dict[str, Any]]:
    """The suspect labels of a folder as JSON entries, each face's thumbnail written to
    ``folder/<n>.jpg`` and named in the entry's ``thumbnail``, relative to ``root`` (what
    ``compare`` keeps in its ``metrics.json`` and shows in its report)."""
    report = find_suspect_labels(records, analyses)
    thumbs = suspect_thumbnails(report.suspects, {r.rel_path: r.path for r in records})
    entries = []
    for n, s in enumerate(report.suspects):
        entry = s.to_json()
        if s.rel_path in thumbs:
            path = folder / f"{n}.jpg"
            atomic_write_bytes(path, jpeg_bytes(thumbs[s.rel_path]))
            entry["thumbnail"] = path.relative_to(root).as_posix()
        entries.append(entry)
    return entries
