"""Writing ``group``'s output folder: one folder per person, ``no_face/``, ``singles/``,
``groups.csv`` and the face thumbnails the contact sheet shows.

Each photo is *filed* once: under the group of its largest grouped face (in a group photo the
largest face is usually the person the photo is of), else in ``singles/`` when it shows faces
none of which is in a group, else in ``no_face/``. Filing each photo once keeps the person folders
usable as classes for ``compare`` (a photo in two class folders would be a label conflict);
``groups.csv`` and the contact sheet list every face. Folders hold symbolic links to the original
photos (copies with ``--copy``, or where links cannot be made); originals are never touched.
Only files this command wrote are ever removed or replaced: a file a person put in a folder stays.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from image_classifier.data.decode import read_source
from image_classifier.errors import UnreadableImageError
from image_classifier.faces.clustering import SINGLE
from image_classifier.faces.thumbnails import face_thumbnails, jpeg_bytes
from image_classifier.fileio import atomic_write_bytes, atomic_write_text
from image_classifier.people.photos import FaceRef, FolderFaces, Photo
from image_classifier.people.state import (CSV_NAME, MARKER_NAME, NO_FACE_DIR, SINGLES_DIR, THUMBS_DIR,
                                           GroupState, write_marker)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filing:
    """Where every photo goes: ``by_group`` (group -> photos filed there), ``singles``, ``no_face``."""

    by_group: dict[int, list[Photo]]
    singles: list[Photo]
    no_face: list[Photo]


def file_photos(folder: FolderFaces, labels: np.ndarray, groups: Sequence[int]) -> Filing:
    """File each photo under the group of its largest grouped face (see the module docstring)."""
    first: dict[str, int] = {}
    has_face: set[str] = set()
    for face, g in zip(folder.faces, labels):  # faces come per photo, largest first
        has_face.add(face.photo.rel_path)
        if g != SINGLE and face.photo.rel_path not in first:
            first[face.photo.rel_path] = int(g)
    by_group: dict[int, list[Photo]] = {g: [] for g in groups}
    singles, no_face = [], []
    for p in folder.photos:
        if p.rel_path in first:
            by_group.setdefault(first[p.rel_path], []).append(p)
        elif p.rel_path in has_face or folder.analyses[p.sha256].faces:
            singles.append(p)
        else:
            no_face.append(p)
    return Filing(by_group, singles, no_face)


def link_name(photo: Photo) -> str:
    """The file name of a photo in an output folder: its path in the folder, flattened."""
    return photo.rel_path.replace("/", "__")


def _place(src: Path, dest: Path, copy: bool) -> None:
    if not copy:
        try:
            dest.symlink_to(src.resolve())
            return
        except OSError as err:  # e.g. Windows without the right to make links
            log.debug("cannot link %s (%s): copying", dest, err)
    shutil.copy2(src, dest)


def _points_at(dest: Path, src: Path, copy: bool) -> bool:
    if dest.is_symlink():
        return not copy and Path(os.readlink(dest)) == src.resolve()
    return copy and dest.is_file() and dest.stat().st_size == src.stat().st_size


def sync_folder(folder: Path, photos: Sequence[Photo], written: Sequence[str], copy: bool) -> list[str]:
    """Make ``folder`` hold ``photos`` (links or copies); remove what this command wrote there
    before and no longer belongs. Returns the names written, for the next run."""
    folder.mkdir(parents=True, exist_ok=True)
    ours = set(written)
    wanted = {link_name(p): p for p in photos}
    for name in ours - set(wanted):
        path = folder / name
        if path.is_symlink() or path.is_file():
            path.unlink()
    placed = []
    for name, photo in sorted(wanted.items()):
        dest = folder / name
        if os.path.lexists(dest):
            if name not in ours:
                log.warning("%s is not a file image-classifier group wrote: left as it is", dest)
                continue
            if _points_at(dest, photo.path, copy):
                placed.append(name)
                continue
            dest.unlink()
        _place(photo.path, dest, copy)
        placed.append(name)
    return placed


def remove_group_folder(folder: Path, written: Sequence[str]) -> bool:
    """Remove what this command wrote in a merged group's folder (its links and marker), and the
    folder when nothing else is left in it; returns whether the folder is gone."""
    for name in [*written, MARKER_NAME]:
        path = folder / name
        if path.is_symlink() or path.is_file():
            path.unlink()
    try:
        folder.rmdir()
        return True
    except OSError:
        log.warning("%s still holds files image-classifier group did not write: left in place", folder)
        return False


def write_folders(out: Path, filing: Filing, names: dict[int, str], state: GroupState, copy: bool) -> None:
    """Every group's folder (with its marker), ``singles/`` and ``no_face/``; updates ``state.written``."""
    written: dict[str, list[str]] = {}
    for gid, photos in filing.by_group.items():
        folder = out / names[gid]
        written[str(gid)] = sync_folder(folder, photos, state.written.get(str(gid), []), copy)
        write_marker(folder, gid)
    for key, photos in ((SINGLES_DIR, filing.singles), (NO_FACE_DIR, filing.no_face)):
        if photos or state.written.get(key):
            written[key] = sync_folder(out / key, photos, state.written.get(key, []), copy)
    state.written = written


def thumb_name(face: FaceRef) -> str:
    return f"{face.photo.sha256}_{face.index}.jpg"


def write_thumbnails(out: Path, faces: Sequence[FaceRef], *, progress: bool = False) -> dict[str, str]:
    """A thumbnail per face under ``OUT/.thumbs`` (named by content: made once, kept across runs);
    each photo is decoded once for all its faces. Returns {face key: reason} for faces whose photo
    could not be decoded again."""
    folder = out / THUMBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    todo: dict[str, list[FaceRef]] = {}
    for f in faces:
        if not (folder / thumb_name(f)).is_file():
            todo.setdefault(f.photo.sha256, []).append(f)
    failed: dict[str, str] = {}

    def make(group: list[FaceRef]) -> None:
        try:
            data, path = read_source(group[0].photo.path)
            for f, im in zip(group, face_thumbnails(data, [f.box for f in group], path=path)):
                atomic_write_bytes(folder / thumb_name(f), jpeg_bytes(im))
        except UnreadableImageError as err:
            failed.update({f.key: err.reason for f in group})

    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        list(tqdm(pool.map(make, todo.values()), total=len(todo), desc="face thumbnails", unit="photo",
                  leave=False, disable=not progress or None))
    return failed


CSV_COLUMNS = ("photo", "face", "x0", "y0", "x1", "y1", "group", "distance", "filed_under")


def write_csv(out: Path, folder: FolderFaces, labels: np.ndarray, distances: np.ndarray,
              names: dict[int, str], filing: Filing) -> None:
    """``groups.csv``: one row per face (photo, face index, box, group, distance to the group's
    centre, the folder the photo is filed under), and one per photo without a face."""
    filed = {p.rel_path: names[g] for g, ps in filing.by_group.items() for p in ps}
    filed.update({p.rel_path: SINGLES_DIR for p in filing.singles})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for face, g, d in zip(folder.faces, labels, distances):
        group = SINGLES_DIR if g == SINGLE else names[int(g)]
        writer.writerow([face.photo.rel_path, face.index, *(round(v, 1) for v in face.box), group,
                         "" if np.isnan(d) else f"{d:.4f}", filed[face.photo.rel_path]])
    for p in filing.no_face:
        writer.writerow([p.rel_path, "", "", "", "", "", NO_FACE_DIR, "", NO_FACE_DIR])
    atomic_write_text(out / CSV_NAME, buf.getvalue())
