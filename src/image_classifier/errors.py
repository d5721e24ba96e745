"""Errors a user can act on. The CLI prints their message without a traceback and exits 2."""
from __future__ import annotations


class ImageClassifierError(Exception):
    """Base class: a problem with the user's data, arguments or files, with a message saying what to do."""


class UnreadableImageError(ImageClassifierError):
    """A file that is not a decodable image (truncated, not an image, too large, empty)."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class DatasetError(ImageClassifierError):
    """The data folder cannot be used (no classes, a class with too few images, ...)."""


class ManifestMismatchError(ImageClassifierError):
    """A split manifest no longer matches the files on disk."""


class WeightsNotFoundError(ImageClassifierError):
    """Pretrained weights were asked for and could not be found locally."""


class ModelFormatError(ImageClassifierError):
    """A saved model directory (or exported file) is missing, corrupted or inconsistent."""
