"""Serving trained models: a web page and a JSON API (``image-classifier serve``)."""
from __future__ import annotations

from image_classifier.serve.app import create_app
from image_classifier.serve.store import ModelStore, discover

__all__ = ["ModelStore", "create_app", "discover"]
