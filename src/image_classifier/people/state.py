"""What ``group`` remembers in its output folder between runs, and every name it writes there.

``OUT/.group.json`` holds each group's faces (by content: ``<sha256>:<face index>``) and the
files ``group`` wrote into each folder. Each group's folder holds a marker file ``.group`` with
the group's number, so a folder the user renamed (``person_001`` -> ``Ana``) is still found and
its new name is the person's name. Hidden names (``.group``, ``.group.json``, ``.thumbs``) are
skipped by every command that reads class folders, so ``compare`` never sees them.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from image_classifier.errors import DatasetError
from image_classifier.fileio import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

STATE_NAME = ".group.json"
MARKER_NAME = ".group"
THUMBS_DIR = ".thumbs"
NO_FACE_DIR = "no_face"
SINGLES_DIR = "singles"
CSV_NAME = "groups.csv"
INDEX_NAME = "index.html"
RESERVED = frozenset({NO_FACE_DIR, SINGLES_DIR})
STATE_VERSION = 1
#: The name ``group`` gives a new group; any other folder name is a name a person gave it.
DEFAULT_NAME = re.compile(r"person_\d{3,}")


def default_name(gid: int) -> str:
    return f"person_{gid:03d}"


def is_default_name(name: str) -> bool:
    return DEFAULT_NAME.fullmatch(name) is not None


@dataclass
class GroupState:
    """The groups of the last run: ``faces`` (face key -> group number), ``names`` (group number ->
    folder name), ``written`` (folder key -> file names ``group`` put there: a group number as a
    string, or ``no_face`` / ``singles``), ``attached`` (the faces that joined their group by the
    attach step, see :func:`~image_classifier.faces.clustering.cluster_faces`) and the next free
    group number."""

    data: str = ""
    next_id: int = 1
    names: dict[int, str] = field(default_factory=dict)
    faces: dict[str, int] = field(default_factory=dict)
    written: dict[str, list[str]] = field(default_factory=dict)
    attached: set[str] = field(default_factory=set)  # face keys that joined their group by the attach step

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "data": self.data, "next_id": self.next_id,
                "names": {str(g): n for g, n in sorted(self.names.items())},
                "faces": dict(sorted(self.faces.items())), "attached": sorted(self.attached),
                "written": {k: sorted(v) for k, v in sorted(self.written.items())}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GroupState:
        if int(d.get("version", 0)) != STATE_VERSION:
            raise DatasetError(f"{STATE_NAME} was written by another version of image-classifier group; "
                               "remove it (the groups will be made again) or use a new --out")
        return cls(str(d.get("data", "")), int(d["next_id"]), {int(g): str(n) for g, n in d["names"].items()},
                   {str(k): int(g) for k, g in d["faces"].items()},
                   {str(k): [str(n) for n in v] for k, v in d.get("written", {}).items()},
                   {str(k) for k in d.get("attached", [])})


def load_state(out: Path) -> GroupState | None:
    """The state of an earlier run in ``out``, or None for a new output folder."""
    path = out / STATE_NAME
    if not path.is_file():
        return None
    try:
        return GroupState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path} cannot be read ({err}): remove it to group {out.parent} afresh") from None


def save_state(out: Path, state: GroupState) -> None:
    atomic_write_json(out / STATE_NAME, state.to_json())


def read_markers(out: Path) -> dict[int, str]:
    """Group number -> the folder of ``out`` that holds its marker now (its current name)."""
    found: dict[int, str] = {}
    if not out.is_dir():
        return found
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        marker = folder / MARKER_NAME
        if not marker.is_file():
            continue
        try:
            gid = int(marker.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            log.warning("ignoring %s: not a group marker", marker)
            continue
        if gid in found:
            raise DatasetError(f"{out / found[gid]} and {folder} both hold the marker of group {gid} "
                               f"(a copied folder?): remove one of the two {MARKER_NAME} files")
        found[gid] = folder.name
    return found


def write_marker(folder: Path, gid: int) -> None:
    atomic_write_text(folder / MARKER_NAME, f"{gid}\n")
