"""Errors a user can act on. The CLI prints their message without a traceback and exits 2."""
from __future__ import annotations

from typing import Literal

# Why an image cannot be used, for callers that act on the cause rather than show it (the web API
# maps it to an HTTP status): the file cannot be read at all; it is over a size or pixel limit; it
# is not an image in a supported format or colour mode; it is an image whose data is broken; empty.
UnreadableKind = Literal["io", "too_large", "unsupported", "corrupt", "empty"]


class ImageClassifierError(Exception):
    """Base class: a problem with the user's data, arguments or files, with a message saying what to do."""


class UnreadableImageError(ImageClassifierError):
    """A file that is not a decodable image (truncated, not an image, too large, empty)."""

    def __init__(self, reason: str, path: str | None = None, kind: UnreadableKind = "corrupt") -> None:
        self.reason = reason
        self.path = path
        self.kind: UnreadableKind = kind
        super().__init__(f"{path}: {reason}" if path else reason)


class DatasetError(ImageClassifierError):
    """The data folder cannot be used (no classes, a class with too few images, ...)."""


class ManifestMismatchError(ImageClassifierError):
    """A split manifest no longer matches the files on disk."""


class WeightsNotFoundError(ImageClassifierError):
    """Pretrained weights were asked for and could not be found locally."""


class ModelFormatError(ImageClassifierError):
    """A saved model directory (or exported file) is missing, corrupted or inconsistent."""


class OptionError(ImageClassifierError, ValueError):
    """An option that cannot work (unknown architecture, a fraction out of range, ...): a ``ValueError``
    for Python callers, an error message and exit status 2 for the command line."""


class UnknownOptionError(OptionError, TypeError):
    """An option name the Python API does not know (misspelt, or renamed): a ``TypeError`` as for any
    unexpected keyword, and an :class:`OptionError` (exit 2) for the command line."""
