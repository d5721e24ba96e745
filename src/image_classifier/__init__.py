"""image-classifier: folders of labelled photos -> honestly compared classifiers and a web app."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from image_classifier.api import train
from image_classifier.study import compare
from image_classifier.version import __version__

if TYPE_CHECKING:
    from image_classifier.faces import FaceCache
    from image_classifier.inference.classifier import Classifier

__all__ = ["__version__", "compare", "load_model", "train"]


def load_model(model_dir: str | os.PathLike, backend: str = "auto", *, threads: int | None = None,
               remeasure: bool = False, face_cache: FaceCache | None = None, reject: bool = True,
               device: str = "auto") -> Classifier:
    """Open a saved model directory, on the fastest backend measured here by default, computing on
    ``device`` (``auto``: the first CUDA GPU when PyTorch sees one, else the CPU); see
    :func:`image_classifier.inference.loading.load_model`."""
    # Imported on call: the inference stack loads PyTorch (seconds), and importing this package
    # must stay instant for `image-classifier --help`, whose modules all live under it.
    from image_classifier.inference.loading import load_model as _load_model

    return _load_model(model_dir, backend, threads=threads, remeasure=remeasure, face_cache=face_cache,
                       reject=reject, device=device)
