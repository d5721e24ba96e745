"""What ``split`` and ``check`` are asked to do, each option declared once (:mod:`image_classifier.optionspec`):
the parsers, the Python keywords of :func:`~image_classifier.data.split.make_split` and
:func:`~image_classifier.data.check.audit_dataset`, and the checks come from these fields. A light
module: ``--help`` reads it without loading Pillow or numpy."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from image_classifier.errors import DatasetError
from image_classifier.optionspec import option

#: A new split's validation and test fractions when none are given (split, train and compare alike).
DEFAULT_FRACTION = 0.15


def check_fractions(val: float, test: float) -> None:
    """Raise :class:`DatasetError` unless ``val`` and ``test`` are fractions that leave images to train on."""
    for name, f in (("val", val), ("test", test)):
        if not 0 <= f < 1:
            raise DatasetError(f"--{name} must be a fraction between 0 and 1, not {f}")
    if val + test >= 1:
        raise DatasetError(f"--val {val} + --test {test} leave nothing to train on; keep their sum under 1")


@dataclass(frozen=True, kw_only=True)
class SplitOptions:
    """How :func:`~image_classifier.data.split.make_split` splits a folder (``split``'s options);
    checked when made, before any file is read."""

    seed: int = option(0, help="random seed (default: %(default)s)")
    val: float = option(DEFAULT_FRACTION, help="validation fraction (default: %(default)s)")
    test: float = option(DEFAULT_FRACTION, help="test fraction (default: %(default)s)")

    def __post_init__(self) -> None:
        check_fractions(self.val, self.test)


@dataclass(frozen=True, kw_only=True)
class CheckOptions:
    """What ``check`` looks for beyond counts, formats and exact duplicates."""

    near_duplicates: bool = option(True, help="skip the near-duplicate search (exact duplicates are still found)")
    faces: bool = option(True, help="skip looking for faces (by default each class's images with no face, one face "
                                    "and several faces are counted; the answers are cached for compare and serve)")
    html: Path | None = option(None, metavar="FILE", help="also write the report as one HTML page, with a face "
                                                          "thumbnail for each suspect label")
