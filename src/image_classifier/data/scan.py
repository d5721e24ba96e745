"""Reading a class-folder dataset: which files, which classes, what each file really is.

Layout: ``root/<class name>/**/<file>``. Class names are the sub-folder names exactly as written
(``ronaldo`` stays ``ronaldo``), sorted by code point, and a class's label is its index in that
order. Every file under a class folder is a candidate, whatever its extension: its format is found
from its content. Files that cannot be decoded are listed with the reason and skipped; files lying
directly in ``root`` belong to no class and are listed as stray, never used.
"""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from image_classifier.data.decode import decode_image, extension_mismatch, read_source
from image_classifier.data.near_duplicates import THUMB_SIDE, compute_fingerprint
from image_classifier.errors import DatasetError, UnreadableImageError

log = logging.getLogger(__name__)

# Operating-system clutter that is never an image and is not worth reporting.
IGNORED_NAMES = frozenset({"Thumbs.db", "desktop.ini", "Icon\r", "__MACOSX"})


def is_ignored(name: str) -> bool:
    """Hidden files and folders (".DS_Store", ".ipynb_checkpoints", ...) and OS clutter."""
    return name.startswith(".") or name in IGNORED_NAMES


@dataclass(frozen=True)
class DatasetFile:
    """A file found under a class folder, before it is read."""

    rel_path: str  # POSIX, relative to the dataset root
    path: Path
    class_name: str


@dataclass(frozen=True)
class DatasetListing:
    """The folder structure: classes (sorted), candidate files (sorted by rel_path), stray files."""

    root: Path
    classes: list[str]
    files: list[DatasetFile]
    stray_files: list[str]  # files directly in root: not in any class


@dataclass
class ImageRecord:
    """One readable image of the dataset."""

    rel_path: str
    path: Path
    class_name: str
    label: int
    sha256: str
    format: str  # true format, sniffed from the content ("JPEG", "PNG", ...)
    width: int  # full resolution, after EXIF orientation
    height: int
    size_bytes: int
    mode: str  # colour mode stored in the file
    extension_claims: str | None = None  # the format the extension promises, when it lies
    fingerprint: object | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class UnreadableFile:
    rel_path: str
    class_name: str
    reason: str


@dataclass
class ScanResult:
    root: Path
    classes: list[str]
    records: list[ImageRecord]  # sorted by rel_path
    unreadable: list[UnreadableFile]  # sorted by rel_path
    stray_files: list[str]

    @property
    def files(self) -> int:
        """Number of candidate files under class folders (readable or not)."""
        return len(self.records) + len(self.unreadable)

    def class_counts(self) -> dict[str, int]:
        counts = {c: 0 for c in self.classes}
        for r in self.records:
            counts[r.class_name] += 1
        return counts


def check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"data folder {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"{path} is a file; pass the folder that holds one sub-folder per class")
    return path


def list_dataset(root: str | os.PathLike) -> DatasetListing:
    """List class folders and their files without reading them (fast, used to verify manifests)."""
    root = check_root(root)
    classes: list[str] = []
    stray: list[str] = []
    with os.scandir(root) as entries:
        for entry in entries:
            if is_ignored(entry.name):
                continue
            if entry.is_dir():
                classes.append(entry.name)
            elif entry.is_file():
                stray.append(entry.name)
    classes.sort()
    files = sorted((DatasetFile(full.relative_to(root).as_posix(), full, class_name)
                    for class_name in classes for full in list_files(root / class_name)),
                   key=lambda f: f.rel_path)
    return DatasetListing(root, classes, files, sorted(stray))


def list_files(root: str | os.PathLike, *, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Every file under ``root`` (at any depth), sorted by its POSIX path relative to ``root``,
    without hidden files and OS clutter (:func:`is_ignored`) and without anything under ``exclude``
    (an output folder inside ``root``). Nothing is read: what each file really is is found from
    its content later, so a photo with a wrong or missing extension is still a photo."""
    root = Path(root).expanduser()
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d)
                             and (skip is None or (here / d).resolve() != skip))
        for name in filenames:
            if not is_ignored(name):
                full = here / name
                found.append((full.relative_to(root).as_posix(), full))
    return [path for _, path in sorted(found)]


def _read_one(item: DatasetFile, label: int, fingerprints: bool) -> ImageRecord | UnreadableFile:
    try:
        data, _ = read_source(item.path)
        sha = hashlib.sha256(data).hexdigest()
        # Decoding everything proves the file is readable (a truncated JPEG fails at the end);
        # JPEG draft mode makes that cheap, and the thumbnail is all the fingerprint needs.
        decoded = decode_image(data, path=item.rel_path, target_size=THUMB_SIDE if fingerprints else 64)
    except UnreadableImageError as err:
        return UnreadableFile(item.rel_path, item.class_name, err.reason)
    return ImageRecord(
        rel_path=item.rel_path, path=item.path, class_name=item.class_name, label=label,
        sha256=sha, format=decoded.format, width=decoded.width, height=decoded.height,
        size_bytes=len(data), mode=decoded.mode,
        extension_claims=extension_mismatch(item.rel_path, decoded.format),
        fingerprint=compute_fingerprint(decoded.image) if fingerprints else None)


def read_files(files: list[DatasetFile], classes: list[str], *, fingerprints: bool = False,
               progress: bool = False, desc: str = "reading images") -> tuple[list[ImageRecord], list[UnreadableFile]]:
    """Hash and decode ``files`` (threads: decoding and hashing release the GIL)."""
    labels = {c: i for i, c in enumerate(classes)}
    workers = max(1, min(4, os.cpu_count() or 1))
    results: list[ImageRecord | UnreadableFile]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(lambda f: _read_one(f, labels[f.class_name], fingerprints), files)
        if progress:
            it = tqdm(it, total=len(files), desc=desc, unit="img", disable=None, leave=False)
        results = list(it)
    records = [r for r in results if isinstance(r, ImageRecord)]
    unreadable = [r for r in results if isinstance(r, UnreadableFile)]
    for u in unreadable:
        log.info("skipping %s: %s", u.rel_path, u.reason)
    return records, unreadable


def scan_dataset(root: str | os.PathLike, *, fingerprints: bool = False,
                 progress: bool = False) -> ScanResult:
    """Read every file under the class folders of ``root``.

    Each readable image becomes an :class:`ImageRecord` (sha256 of the bytes, true format,
    full-resolution size after EXIF orientation); the rest become :class:`UnreadableFile` with a
    reason. ``fingerprints=True`` also computes what near-duplicate detection needs (a few
    seconds for a few hundred photos). Raises :class:`DatasetError` when ``root`` is not a folder.
    """
    listing = list_dataset(root)
    records, unreadable = read_files(listing.files, listing.classes, fingerprints=fingerprints,
                                     progress=progress)
    return ScanResult(listing.root, listing.classes, records, unreadable, listing.stray_files)
