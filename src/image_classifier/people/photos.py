"""The photos of an unlabelled folder and their faces: every file under it, at any depth.

Files are identified by content (SHA-256), like everywhere else: faces come from the shared
:class:`~image_classifier.faces.FaceCache`, so a photo seen by ``check``, ``compare`` or an earlier
``group`` costs nothing, and a renamed or moved photo is still the same photo.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from image_classifier.data.scan import check_root, is_ignored
from image_classifier.faces import FaceAnalysis, FaceCache
from image_classifier.fileio import sha256_file


@dataclass(frozen=True)
class Photo:
    """One file of the folder: where it is and what it holds."""

    rel_path: str  # POSIX, relative to the folder
    path: Path
    sha256: str


@dataclass(frozen=True)
class FaceRef:
    """One described face: the photo it is in and its index there (faces come largest first)."""

    photo: Photo
    index: int
    box: tuple[float, float, float, float]

    @property
    def key(self) -> str:
        """The face by content: ``<sha256>:<index>`` (a copy of the photo has the same faces)."""
        return f"{self.photo.sha256}:{self.index}"

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass
class FolderFaces:
    """What the folder holds: its photos, their faces (with descriptors) and what could not be read."""

    root: Path
    photos: list[Photo]
    analyses: dict[str, FaceAnalysis]  # sha256 -> analysis
    unreadable: dict[str, str]  # rel_path -> reason
    faces: list[FaceRef]
    descriptors: np.ndarray  # (len(faces), 128)
    undescribed: int  # faces found beyond the largest few that get a descriptor

    def faces_of(self, photo: Photo) -> list[FaceRef]:
        return [f for f in self.faces if f.photo.rel_path == photo.rel_path]


def list_files(root: Path, exclude: Path | None = None) -> list[Path]:
    """Every file under ``root`` (hidden files and folders, OS clutter and ``exclude`` left out), sorted."""
    exclude = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d)
                             and (exclude is None or (here / d).resolve() != exclude))
        found.extend(here / name for name in filenames if not is_ignored(name))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_folder(root: str | os.PathLike, cache: FaceCache, *, exclude: Path | None = None,
                progress: bool = False) -> FolderFaces:
    """Hash every file under ``root`` and find its faces (cached by content)."""
    root = check_root(root)
    files = list_files(root, exclude)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        hashes = list(tqdm(pool.map(sha256_file, files), total=len(files), desc="reading photos", unit="file",
                           leave=False, disable=not progress or None))
    photos = [Photo(f.relative_to(root).as_posix(), f, h) for f, h in zip(files, hashes)]
    found, failures = cache.analyse_files([(p.path, p.sha256) for p in photos], progress=progress,
                                          desc="finding faces")
    unreadable = {p.rel_path: failures[os.fspath(p.path)] for p in photos
                  if p.sha256 not in found and os.fspath(p.path) in failures}
    # A copy of a file that failed is unreadable too, under its own name.
    for p in photos:
        if p.sha256 not in found and p.rel_path not in unreadable:
            unreadable[p.rel_path] = "unreadable"
    faces: list[FaceRef] = []
    vectors: list[np.ndarray] = []
    undescribed = 0
    for p in photos:
        a = found.get(p.sha256)
        if a is None:
            continue
        described = 0 if a.descriptors is None else len(a.descriptors)
        undescribed += len(a.faces) - described
        for k in range(described):
            faces.append(FaceRef(p, k, a.faces[k].box))
            vectors.append(a.descriptors[k])
    descriptors = np.stack(vectors).astype(np.float64) if vectors else np.zeros((0, 128))
    readable = [p for p in photos if p.rel_path not in unreadable]
    return FolderFaces(root, readable, found, unreadable, faces, descriptors, undescribed)
