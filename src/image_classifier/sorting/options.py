"""What ``image-classifier sort`` is asked to do, checked before any file is read (a light module:
the command line makes these options, and starts the face workers, before PyTorch loads)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from image_classifier.errors import OptionError
from image_classifier.inference import BACKENDS
from image_classifier.optionspec import check_keep

COPY_MODES = ("copy", "link")


@dataclass(frozen=True)
class SortOptions:
    """How :func:`sort_folder` runs; checked when made, before any file is read."""

    #: The output folder (created; refused before any work when it cannot be written).
    out: str | os.PathLike
    #: None: CSV files only; "copy": each photo copied into OUT/<label>/; "link": a symlink there.
    copy: str | None = None
    #: The share of known validation photos the "none of these" rule keeps (None: the model's own).
    keep: float | None = None
    #: False: never answer "unknown".
    reject: bool = True
    backend: str = "auto"
    device: str = "auto"
    #: Photos answered (and written) together.
    batch_size: int = 32
    #: Face analyses cached on disk by content (``cache_dir``, default the decoded-image cache's root).
    cache: bool = True
    cache_dir: str | os.PathLike | None = None
    progress: bool = True
    #: Face-finding processes (default: this process's share of the machine's cores).
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.copy not in (None, *COPY_MODES):
            raise OptionError(f"copy must be one of {', '.join(COPY_MODES)} or None, not {self.copy!r}")
        if self.keep is not None:
            check_keep(self.keep)
        if self.batch_size < 1:
            raise OptionError("--batch-size must be at least 1")
        if self.backend not in BACKENDS:
            raise OptionError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.workers is not None and self.workers < 1:
            raise OptionError("workers must be at least 1")
