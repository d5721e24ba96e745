"""Finding the images that export calibrates on and measures accuracy with.

A labelled folder is the project's usual layout: one sub-folder per class. Only classes the model
knows are read, so a data folder with an extra class still works. Files that cannot be decoded are
skipped with a warning (the dataset checks report them properly; export only needs pictures).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from image_classifier.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp",
                            ".tif", ".tiff", ".ppm", ".pgm", ".avif"})


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def labelled_images(folder: str | os.PathLike, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(path, class index) for every image under ``folder/<class name>/`` for the model's classes."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder of images (one sub-folder per class)")
    found = []
    present = []
    for index, name in enumerate(classes):
        sub = root / name
        if sub.is_dir():
            present.append(name)
            found.extend((p, index) for p in _images_in(sub))
    if not present:
        raise DatasetError(
            f"{root} has none of the model's class folders ({', '.join(classes)}): give a folder laid out "
            "like the training data"
        )
    if not found:
        raise DatasetError(f"{root}: the class folders hold no images")
    return found


def spread_sample(items: Sequence, count: int, *, seed: int = 0) -> list:
    """``count`` items spread over the whole list (every class of a sorted listing is represented),
    deterministic for a seed."""
    if count >= len(items):
        return list(items)
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(items), size=count, replace=False))
    return [items[i] for i in picks]


def any_images(folder: str | os.PathLike, classes: Sequence[str] | None = None) -> list[Path]:
    """Image files of a folder: its class sub-folders when it has any of ``classes``, else all."""
    root = Path(folder)
    if classes:
        try:
            return [p for p, _ in labelled_images(root, classes)]
        except DatasetError:
            pass
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder of images")
    files = _images_in(root)
    if not files:
        raise DatasetError(f"{root} holds no images")
    return files
