"""``image-classifier group DIR --out OUT``: unlabelled photos grouped into people.

The steps: every file under ``DIR`` is hashed and its faces found (cached by content); the faces
are grouped (:func:`~image_classifier.faces.clustering.cluster_faces`), with the groups of an
earlier run in ``OUT`` kept as they were (their faces are fixed seeds: new faces join them or form
new groups); ``--merge`` / ``--split`` change groups; ``--model`` names the unnamed groups a face
model knows; then ``OUT`` is written (:mod:`~image_classifier.people.layout`,
:mod:`~image_classifier.people.sheet`) and the state saved for the next run.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from image_classifier.data.scan import check_root
from image_classifier.errors import OptionError
from image_classifier.faces import FaceCache
from image_classifier.faces.clustering import SINGLE, ClusterParams, centres_of, cluster_faces, main_faces, split_group
from image_classifier.fileio import atomic_write_text
from image_classifier.optionspec import build, cache_root
from image_classifier.people.layout import (file_photos, link_name, remove_group_folder, write_csv, write_folders,
                                            write_thumbnails)
from image_classifier.people.options import GroupOptions
from image_classifier.people.photos import FolderFaces, read_folder
from image_classifier.people.sheet import SheetGroup, render_sheet
from image_classifier.people.state import (INDEX_NAME, RESERVED, GroupState, default_name, is_default_name,
                                           load_state, read_markers, save_state)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupName:
    """What a face model says of one group: the class most of its faces are (None: no majority),
    the share of its faces that are that class, and how many of its faces the model knew at all."""

    label: str | None
    share: float
    known: int
    faces: int


#: Names a group from its faces' descriptors (``people.naming.ModelNamer`` for ``--model``).
Namer = Callable[[np.ndarray], GroupName]


@dataclass
class GroupSummary:
    """One group after the run."""

    gid: int
    name: str
    faces: int
    photos: int
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.gid, "faces": self.faces, "photos": self.photos, "note": self.note}


@dataclass
class GroupResult:
    """What ``group`` did: the groups (largest first), the photos left out, where it wrote."""

    data: Path
    out: Path
    groups: list[GroupSummary]
    photos: int
    faces: int
    singles: int  # faces in no group
    singles_photos: int
    no_face: int
    unreadable: dict[str, str]
    undescribed: int
    events: list[str] = field(default_factory=list)
    seconds: float = 0.0
    labels: np.ndarray | None = field(default=None, repr=False)  # per face (FolderFaces.faces order): group id or -1
    face_keys: list[str] = field(default_factory=list, repr=False)
    face_photos: list[str] = field(default_factory=list, repr=False)  # per face: its photo's path in DATA

    def to_json(self) -> dict[str, Any]:
        return {"data": os.fspath(self.data), "out": os.fspath(self.out), "photos": self.photos,
                "faces": self.faces, "groups": [g.to_json() for g in self.groups], "singles": self.singles,
                "singles_photos": self.singles_photos, "no_face": self.no_face, "unreadable": self.unreadable,
                "undescribed_faces": self.undescribed, "events": self.events, "seconds": round(self.seconds, 2)}

    def render(self) -> str:
        lines = [f"{self.photos} photos, {self.faces} faces: {len(self.groups)} groups, {self.singles} faces "
                 f"in no group ({self.singles_photos} photos in singles/), {self.no_face} photos without a face"
                 + (f", {len(self.unreadable)} unreadable" if self.unreadable else "")
                 + f" ({self.seconds:.1f} s)"]
        lines += [f"  {e}" for e in self.events]
        width = max((len(g.name) for g in self.groups), default=5)
        for g in self.groups:
            lines.append(f"  {g.name:<{width}}  {g.photos:>5} photos  {g.faces:>5} faces" + (f"  {g.note}" if g.note else ""))
        lines.append(f"wrote {self.out} (open {self.out / INDEX_NAME})")
        return "\n".join(lines)


def _output_dir(data: Path, out: str | os.PathLike) -> Path:
    out = Path(out).expanduser().resolve()
    if out == data:
        raise OptionError(f"--out {out} is the folder being grouped: pass a new folder (e.g. {data}-people)")
    if out in data.parents:
        raise OptionError(f"--out {out} holds the folder being grouped: pass a folder outside {data}")
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out} is a file, not a folder")
    return out


def _resolve(name: str, names: dict[int, str]) -> int:
    """The group a folder name (or ``person_NNN`` number) names."""
    for gid, n in names.items():
        if n == name:
            return gid
    for gid in names:
        if name in (default_name(gid), str(gid)):
            return gid
    raise OptionError(f"no group called {name!r}: the groups are " + ", ".join(sorted(names.values())))


def _unique_name(wanted: str, taken: set[str]) -> str:
    name, k = wanted, 2
    while name in taken or name in RESERVED:
        name, k = f"{wanted} ({k})", k + 1
    return name


def group_photos(data: str | os.PathLike, out: str | os.PathLike, options: GroupOptions | None = None, *,
                 namer: Namer | None = None, **kwargs: Any) -> GroupResult:
    """Group the faces of every photo under ``data`` into people and write ``out`` (see the module
    docstring). ``kwargs`` are :class:`GroupOptions` fields; ``namer`` names the unnamed groups
    (``people.naming.ModelNamer(model_dir)`` for a trained face model)."""
    started = time.perf_counter()
    options = options or build(GroupOptions, "group", kwargs)
    options.check()
    params = options.params()
    data = check_root(data).resolve()
    out = _output_dir(data, out)
    state = load_state(out) or GroupState(data=os.fspath(data))
    if state.data and state.data != os.fspath(data):
        log.info("%s was grouped from %s; now from %s: its groups are kept", out, state.data, data)
    state.data = os.fspath(data)
    markers = read_markers(out)
    names = {gid: markers[gid] for gid in state.names if gid in markers}
    events = [f"{state.names[g]}: its folder is gone, so the group is forgotten and its faces grouped again"
              for g in sorted(set(state.names) - set(names))]
    exclude = out if data in out.parents else None
    cache = FaceCache(cache_root(options.cache, options.cache_dir))
    folder = read_folder(data, cache, exclude=exclude, progress=options.progress)
    keys = [f.key for f in folder.faces]
    photos = [f.photo.rel_path for f in folder.faces]
    seeds = np.array([state.faces.get(k, SINGLE) if state.faces.get(k, SINGLE) in names else SINGLE for k in keys],
                     dtype=np.int64)
    seeds_attached = np.array([k in state.attached for k in keys], dtype=bool)
    before = Counter(int(g) for g in seeds if g != SINGLE)
    first = main_faces(photos, [f.area for f in folder.faces])
    clustering = cluster_faces(folder.descriptors, photos, params, first=first,
                               seeds=seeds, seeds_attached=seeds_attached)
    attached = clustering.attached.copy()
    labels = clustering.labels.copy()
    taken = set(names.values()) | ({p.name for p in out.iterdir()} if out.is_dir() else set())
    seeded = set(names)
    for g in [g for g in clustering.groups if g not in seeded]:  # new groups, largest first
        labels[clustering.labels == g] = _new_group(state, names, taken)
    notes: dict[int, str] = {g: "new" for g in names if g not in before}
    for g, n in before.items():
        grown = int((labels == g).sum()) - n
        if grown:
            notes[g] = f"+{grown} faces"
    gone_folders: dict[int, str] = {}
    if options.merge is not None:
        keep, other = (_resolve(n, names) for n in options.merge)
        gone_folders[other] = names[other]
        events.append(_merge(keep, other, labels, attached, folder.descriptors, photos, names))
        notes[keep] = f"merged with {gone_folders[other]}"
    if options.split is not None:
        gid = _resolve(options.split, names)
        events.append(_split(gid, labels, attached, folder.descriptors, photos, params, state, names, taken, notes))
    if namer is not None:
        events += _name(namer, out, labels, folder.descriptors, names, taken, notes)
    _write(out, data, folder, labels, names, notes, state, options, gone_folders)
    state.names = dict(names)
    state.faces = {k: int(g) for k, g in zip(keys, labels) if g != SINGLE}
    state.attached = {k for k, g, a in zip(keys, labels, attached) if g != SINGLE and a}
    save_state(out, state)
    return _result(data, out, folder, labels, names, notes, events, time.perf_counter() - started)


def _new_group(state: GroupState, names: dict[int, str], taken: set[str]) -> int:
    """A new group number and its default folder name (one no folder of OUT has)."""
    gid = state.next_id
    while default_name(gid) in taken:
        gid += 1
    state.next_id = gid + 1
    names[gid] = default_name(gid)
    taken.add(names[gid])
    return gid


def _note(notes: dict[int, str], gid: int, text: str) -> None:
    notes[gid] = f"{notes[gid]}; {text}" if notes.get(gid) else text


def _merge(keep: int, other: int, labels: np.ndarray, attached: np.ndarray, descriptors: np.ndarray,
           photos: list[str], names: dict[int, str]) -> str:
    """Group ``other`` joins ``keep`` (in place). Where both held a face of one photo, the face
    nearer the merged group's centre stays and the other leaves: two faces of one photo are never
    one person, even when a person asks."""
    labels[labels == other] = keep
    attached[labels == keep] = False  # one group, one core: a merge is the person's word
    members = np.flatnonzero(labels == keep)
    centre = descriptors[members].mean(0)
    by_photo: dict[str, list[int]] = {}
    for i in members:
        by_photo.setdefault(photos[i], []).append(int(i))
    left = 0
    for faces in by_photo.values():
        if len(faces) > 1:
            faces.sort(key=lambda i: float(np.linalg.norm(descriptors[i] - centre)))
            labels[faces[1:]] = SINGLE
            left += len(faces) - 1
    gone = names.pop(other)
    text = f"merged {gone} into {names[keep]}"
    return text + (f" ({left} faces left out: another face of their photo is in it)" if left else "")


def _split(gid: int, labels: np.ndarray, attached: np.ndarray, descriptors: np.ndarray, photos: list[str],
           params: ClusterParams, state: GroupState, names: dict[int, str], taken: set[str],
           notes: dict[int, str]) -> str:
    """Group ``gid`` re-clustered tighter (in place): its largest part keeps its name."""
    members = np.flatnonzero(labels == gid)
    parts, core = split_group(descriptors[members], [photos[i] for i in members], params)
    if core is None:
        return f"{names[gid]} did not come apart (no core distance down to 0.2 splits it)"
    made = []
    for part in range(1, int(parts.max()) + 1):
        new = _new_group(state, names, taken)
        labels[members[parts == part]] = new
        notes[new] = f"split from {names[gid]}"
        made.append(names[new])
    labels[members[parts == SINGLE]] = SINGLE
    attached[members] = False  # each part is a core of its own now
    notes[gid] = f"split at core distance {core:.2f}"
    return f"split {names[gid]} at core distance {core:.2f}: {names[gid]}, " + ", ".join(made)


def _name(namer: Namer, out: Path, labels: np.ndarray, descriptors: np.ndarray, names: dict[int, str],
          taken: set[str], notes: dict[int, str]) -> list[str]:
    """Name each group that still has its default name after the class most of its faces are."""
    events = []
    for gid in sorted(names, key=lambda g: -int((labels == g).sum())):
        if not is_default_name(names[gid]) or not (labels == gid).any():
            continue
        verdict = namer(descriptors[labels == gid])
        if verdict.label is None:
            _note(notes, gid, "not a person the model knows")
            continue
        new_name = _unique_name(verdict.label, taken - {names[gid]})
        events.append(f"{names[gid]} is {new_name!r} by the model ({100 * verdict.share:.0f} % of its "
                      f"{verdict.faces} faces)")
        if (out / names[gid]).is_dir():
            (out / names[gid]).rename(out / new_name)
        names[gid] = new_name
        taken.add(new_name)
        _note(notes, gid, f"named by the model ({100 * verdict.share:.0f} %)")
    return events


def _result(data: Path, out: Path, folder: FolderFaces, labels: np.ndarray, names: dict[int, str],
            notes: dict[int, str], events: list[str], seconds: float) -> GroupResult:
    filing = file_photos(folder, labels, list(names))
    faces = Counter(int(g) for g in labels)
    groups = [GroupSummary(g, names[g], faces.get(g, 0), len(filing.by_group.get(g, [])), notes.get(g, ""))
              for g in sorted(names, key=lambda g: (-faces.get(g, 0), names[g]))]
    return GroupResult(data, out, groups, len(folder.photos), len(folder.faces), int((labels == SINGLE).sum()),
                       len(filing.singles), len(filing.no_face), dict(folder.unreadable), folder.undescribed,
                       events, seconds, labels, [f.key for f in folder.faces], [f.photo.rel_path for f in folder.faces])


def _write(out: Path, data: Path, folder: FolderFaces, labels: np.ndarray, names: dict[int, str],
           notes: dict[int, str], state: GroupState, options: GroupOptions, gone: dict[int, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for gid, name in gone.items():
        remove_group_folder(out / name, state.written.get(str(gid), []))
        state.written.pop(str(gid), None)
    filing = file_photos(folder, labels, list(names))
    write_folders(out, filing, names, state, options.copy)
    centres = centres_of(folder.descriptors, labels)
    distances = np.full(len(labels), np.nan)
    for g, c in centres.items():
        members = labels == g
        distances[members] = np.linalg.norm(folder.descriptors[members] - c, axis=1)
    write_csv(out, folder, labels, distances, names, filing)
    missing = write_thumbnails(out, folder.faces, progress=options.progress)
    folder_of = {p.rel_path: names[g] for g, ps in filing.by_group.items() for p in ps}
    folder_of.update({p.rel_path: "singles" for p in filing.singles})
    distance = {f.key: float(d) for f, d in zip(folder.faces, distances) if not np.isnan(d)}
    order = sorted(names, key=lambda g: (-int((labels == g).sum()), names[g]))
    ids = [g for g in order if g in centres]
    matrix = np.stack([centres[g] for g in ids]) if ids else np.zeros((0, 128))
    sheet_groups = []
    for g in order:
        members = [f for f, lab in zip(folder.faces, labels) if lab == g]
        members.sort(key=lambda f: -f.area)
        nearest = None
        if g in centres and len(ids) > 1:
            d = np.linalg.norm(matrix - centres[g], axis=1)
            d[ids.index(g)] = np.inf
            k = int(d.argmin())
            nearest = (names[ids[k]], float(d[k]))
        sheet_groups.append(SheetGroup(names[g], members, len(filing.by_group.get(g, [])), notes.get(g, ""), nearest))
    singles = sorted((f for f, lab in zip(folder.faces, labels) if lab == SINGLE), key=lambda f: -f.area)
    n_groups = len(names)
    summary = (f"{len(folder.photos)} photos, {len(folder.faces)} faces, {n_groups} groups "
               f"(at least {options.min_size} faces each when made), {len(singles)} faces in no group, "
               f"{len(filing.no_face)} photos without a face")
    page = render_sheet(data, sheet_groups, singles, [link_name(p) for p in filing.no_face], folder.unreadable,
                        folder_of, distance, summary, set(missing))
    atomic_write_text(out / INDEX_NAME, page)
