"""What ``image-classifier sort`` is asked to do, checked before any file is read (a light module:
the command line makes these options, and starts the face workers, before PyTorch loads)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from image_classifier.errors import OptionError
from image_classifier.inference.options import AnswerOptions
from image_classifier.optionspec import at_least_one, cache_dir_option, cache_option, option

COPY_MODES = ("copy", "link")


def _check_copy(copy: str) -> str:
    if copy not in COPY_MODES:
        raise OptionError(f"copy must be one of {', '.join(COPY_MODES)} or None, not {copy!r}")
    return copy


@dataclass(frozen=True, kw_only=True)
class SortOptions(AnswerOptions):
    """How :func:`sort_folder` runs, each field the ``sort`` option of the same name (declared once:
    :mod:`image_classifier.optionspec`; those of every answering command are
    :class:`~image_classifier.inference.options.AnswerOptions`); checked when made, before any file is read."""

    out: str | os.PathLike = option(metavar="OUT", parse=str,
                                    help="output folder (created; may be inside DIR, then left out)")
    copy: str | None = option(None, check=_check_copy, help="None: CSV files only", switches={
        "--copy": ("copy", "copy each photo into OUT/<class>/ (OUT/unknown/ for none of the classes), keeping its "
                           "path under DIR"),
        "--link": ("link", "like --copy, with symbolic links to the originals instead of copies")})
    batch_size: int = option(32, metavar="N", check=at_least_one("--batch-size"),
                             help="photos answered and written together (default: %(default)s)")
    cache: bool = cache_option()
    cache_dir: str | os.PathLike | None = cache_dir_option()
    progress: bool = option(True, help="no progress bar")
    workers: int | None = option(None, cli=False, check=at_least_one("workers"),
                                 help="face-finding processes (default: this process's share of the machine's cores)")

