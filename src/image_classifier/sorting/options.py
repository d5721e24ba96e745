"""What ``image-classifier sort`` is asked to do, checked before any file is read (a light module:
the command line makes these options, and starts the face workers, before PyTorch loads)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from image_classifier.errors import OptionError
from image_classifier.inference import BACKEND_HELP, BACKENDS
from image_classifier.optionspec import (
    DEVICE_HELP, DEVICE_METAVAR, KEEP_HELP, at_least_one, check_keep, check_options, keep_argument, option,
)

COPY_MODES = ("copy", "link")


def _check_copy(copy: str) -> str:
    if copy not in COPY_MODES:
        raise OptionError(f"copy must be one of {', '.join(COPY_MODES)} or None, not {copy!r}")
    return copy


@dataclass(frozen=True)
class SortOptions:
    """How :func:`sort_folder` runs, each field the ``sort`` option of the same name (declared once:
    :mod:`image_classifier.optionspec`); checked when made, before any file is read."""

    out: str | os.PathLike = option(metavar="OUT", parse=str,
                                    help="output folder (created; may be inside DIR, then left out)")
    copy: str | None = option(None, check=_check_copy, help="None: CSV files only", switches={
        "--copy": ("copy", "copy each photo into OUT/<class>/ (OUT/unknown/ for none of the classes), keeping its "
                           "path under DIR"),
        "--link": ("link", "like --copy, with symbolic links to the originals instead of copies")})
    keep: float | None = option(None, metavar="FRACTION", parse=keep_argument, check=check_keep, help=KEEP_HELP)
    reject: bool = option(True, help="never answer \"unknown\": always the most probable class")
    backend: str = option("auto", choices=BACKENDS, help=BACKEND_HELP)
    device: str = option("auto", metavar=DEVICE_METAVAR, help=DEVICE_HELP)
    batch_size: int = option(32, metavar="N", check=at_least_one("--batch-size"),
                             help="photos answered and written together (default: %(default)s)")
    cache: bool = option(True, help="do not read or write the face cache")
    cache_dir: str | os.PathLike | None = option(None, metavar="DIR", parse=str, help="where each file's faces are "
                                                 "cached by content (default: ~/.cache/image-classifier/decoded)")
    progress: bool = option(True, help="no progress bar")
    workers: int | None = option(None, cli=False, check=at_least_one("workers"),
                                 help="face-finding processes (default: this process's share of the machine's cores)")

    def __post_init__(self) -> None:
        check_options(self)
        if not self.reject and self.keep is not None:
            raise OptionError("--keep and --no-reject contradict each other: give one")
