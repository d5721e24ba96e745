"""What ``predict`` accepts, the way Python users hand over pictures: one path or a list of them, a
folder, bytes or a binary stream, PIL images, and numpy arrays (an OpenCV or webcam frame).

:func:`as_sources` turns any of these into the flat list of sources the classifiers decode
(paths, bytes, streams, PIL images), with a name per image for tables (the path, or None). A
numpy array is ``H x W x 3`` ``uint8`` (``H x W`` greyscale, ``H x W x 4`` with alpha, or a stack
``N x H x W x 3``), RGB unless ``bgr=True`` (OpenCV's ``cv2.imread`` and ``VideoCapture`` give
BGR). It becomes a PIL image of the same pixels, so an array and the file it was read from get the
same answer.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from image_classifier.data.scan import list_files

#: What one image may be, besides the decoded objects a classifier hands itself.
SOURCE_TYPES = "a path, a folder, bytes, a binary stream, a PIL image or a numpy array (H x W x 3 uint8)"


def array_to_image(array: np.ndarray, *, bgr: bool = False) -> Image.Image:
    """A PIL RGB image of the pixels of ``array`` (``H x W``, ``H x W x 3`` or ``H x W x 4``,
    ``uint8``); ``bgr``: the channels are in OpenCV's order (blue, green, red[, alpha])."""
    if array.dtype != np.uint8:
        raise TypeError(f"a numpy image must be uint8 (0-255), not {array.dtype}: convert it first, e.g. "
                        "(x * 255).round().astype(np.uint8) for floats in 0-1")
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), "L").convert("RGB")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise TypeError(f"a numpy image must be H x W x 3 (or H x W, H x W x 4), not shape {array.shape}")
    if bgr:
        order = [2, 1, 0] if array.shape[2] == 3 else [2, 1, 0, 3]
        array = array[..., order]
    image = Image.fromarray(np.ascontiguousarray(array), "RGB" if array.shape[2] == 3 else "RGBA")
    if image.mode == "RGBA":  # transparent areas on white, as decoding a file does
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image).convert("RGB")
    return image


def _is_stream(obj: Any) -> bool:
    return hasattr(obj, "read") and not isinstance(obj, (str, bytes, bytearray, memoryview, os.PathLike))


def _one(item: Any, bgr: bool, strict: bool) -> tuple[list[Any], list[str | None]]:
    """(sources, names) for one element: a folder expands to its files, an array stack to its frames."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if path.is_dir():
            files = list_files(path)
            return list(files), [os.fspath(f) for f in files]
        return [item], [os.fspath(item)]
    if isinstance(item, np.ndarray):
        if item.ndim == 4:
            return [array_to_image(frame, bgr=bgr) for frame in item], [None] * len(item)
        return [array_to_image(item, bgr=bgr)], [None]
    if isinstance(item, (bytes, bytearray, memoryview, Image.Image)) or _is_stream(item):
        return [item], [getattr(item, "name", None) if _is_stream(item) else None]
    if strict:
        raise TypeError(f"predict() takes {SOURCE_TYPES}, or a list of them; not {type(item).__name__}")
    return [item], [None]  # a classifier's own decoded input (FaceInput, EnsembleInput, ...)


def as_sources(images: Any, *, bgr: bool = False) -> tuple[list[Any], list[str | None]]:
    """The images to classify, flat, and a name for each (its path, or None): ``images`` is one
    image (see :data:`SOURCE_TYPES`) or a sequence of them; folders are listed (every file under
    them, sorted; what each really is is read from its content). Raises ``TypeError`` for anything
    else, naming what is accepted."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)) \
            or _is_stream(images):
        return _one(images, bgr, strict=True)
    if not isinstance(images, Sequence):
        try:
            images = list(images)
        except TypeError:
            raise TypeError(f"predict() takes {SOURCE_TYPES}, or a list of them; not {type(images).__name__}") from None
    sources: list[Any] = []
    names: list[str | None] = []
    for item in images:
        s, n = _one(item, bgr, strict=False)
        sources.extend(s)
        names.extend(n)
    return sources, names
