"""image-classifier: folders of labelled photos -> honestly compared classifiers and a web app."""
from __future__ import annotations

from image_classifier.api import train

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "train"]


def load_model(path, **kwargs):
    """Load a saved model directory; see :func:`image_classifier.saved_model.load_model`."""
    from image_classifier.saved_model import load_model as _load_model

    return _load_model(path, **kwargs)
