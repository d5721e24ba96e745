"""How many faces each class's photos show: what ``check`` reports and ``compare`` decides on."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from image_classifier.faces.detect import FaceAnalysis
from image_classifier.faces.store import FaceCache

#: ``compare`` adds the face model when at least this share of the images shows a face.
FACE_FOLDER_SHARE = 0.70


@dataclass
class FaceSurvey:
    """Per class: images with no face, one face, several faces; plus which detector step found them."""

    per_class: dict[str, dict[str, int]]  # class -> {"none", "one", "several"}
    methods: dict[str, int]  # cascade step -> images whose largest face it found
    analyses: dict[str, FaceAnalysis] = field(repr=False)  # rel_path -> analysis
    unreadable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images(self) -> int:
        return sum(sum(c.values()) for c in self.per_class.values())

    @property
    def with_face(self) -> int:
        return sum(c["one"] + c["several"] for c in self.per_class.values())

    @property
    def detection_rate(self) -> float:
        return self.with_face / self.images if self.images else 0.0

    @property
    def is_face_folder(self) -> bool:
        """Whether the folder is mostly photos of people (see :data:`FACE_FOLDER_SHARE`)."""
        return self.images > 0 and self.detection_rate >= FACE_FOLDER_SHARE

    def has_face(self, rel_path: str) -> bool | None:
        analysis = self.analyses.get(rel_path)
        return None if analysis is None else analysis.face is not None

    def to_json(self) -> dict[str, Any]:
        return {"per_class": self.per_class, "images": self.images, "with_face": self.with_face,
                "detection_rate": round(self.detection_rate, 4), "methods": self.methods,
                "seconds": round(self.seconds, 2)}

    def render(self) -> str:
        lines = [f"Faces: {self.with_face} of {self.images} images show a face "
                 f"({100 * self.detection_rate:.0f} %; found by "
                 + ", ".join(f"{m} {n}" for m, n in self.methods.items()) + ")"]
        width = max((len(c) for c in self.per_class), default=5)
        lines.append(f"  {'class':<{width}}  {'none':>5} {'one':>5} {'several':>7}")
        for name, c in self.per_class.items():
            lines.append(f"  {name:<{width}}  {c['none']:>5} {c['one']:>5} {c['several']:>7}")
        return "\n".join(lines)


def survey_faces(records: Sequence[Any], cache: FaceCache | None = None, *, progress: bool = False) -> FaceSurvey:
    """Count faces per class over ``records`` (anything with ``path``, ``rel_path``, ``sha256``,
    ``class_name``), analysing each distinct file once through ``cache``."""
    started = time.perf_counter()
    cache = cache if cache is not None else FaceCache()
    found, failures = cache.analyse_files([(r.path, r.sha256) for r in records], progress=progress,
                                          desc="finding faces")
    per_class: dict[str, dict[str, int]] = {}
    methods: Counter[str] = Counter()
    analyses: dict[str, FaceAnalysis] = {}
    for r in records:
        counts = per_class.setdefault(str(r.class_name), {"none": 0, "one": 0, "several": 0})
        analysis = found.get(r.sha256)
        if analysis is None:
            continue
        analyses[r.rel_path] = analysis
        n = len(analysis.faces)
        counts["none" if n == 0 else "one" if n == 1 else "several"] += 1
        if n:
            methods[analysis.method or ""] += 1
    return FaceSurvey(per_class, dict(methods.most_common()), analyses, dict(failures),
                      time.perf_counter() - started)
