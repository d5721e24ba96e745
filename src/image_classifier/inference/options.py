"""How a saved model answers (``predict``, ``sort``, ``serve``): each option declared once
(:mod:`image_classifier.optionspec`), light enough for ``--help`` (no torch, no numpy)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from image_classifier.errors import OptionError
from image_classifier.inference import BACKEND_HELP, BACKENDS
from image_classifier.optionspec import (
    DEVICE_HELP, DEVICE_METAVAR, KEEP_HELP, at_least_one, cache_dir_option, cache_option, check_keep, check_options,
    keep_argument, option,
)


@dataclass(frozen=True, kw_only=True)
class AnswerOptions:
    """The options of every command that answers with a saved model; checked when made, before
    the model loads (``--keep`` with ``--no-reject`` is refused)."""

    backend: str = option("auto", choices=BACKENDS, help=BACKEND_HELP)
    device: str = option("auto", metavar=DEVICE_METAVAR, help=DEVICE_HELP)
    keep: float | None = option(None, metavar="FRACTION", parse=keep_argument, check=check_keep, help=KEEP_HELP)
    reject: bool = option(True, help="never answer \"unknown\": always the most probable class, even for a photo "
                                     "like none of the classes (default: the model's rejection rule, fitted on its "
                                     "validation split)")

    def __post_init__(self) -> None:
        check_options(self)
        if not self.reject and self.keep is not None:
            raise OptionError("--keep and --no-reject contradict each other: give one")


@dataclass(frozen=True, kw_only=True)
class PredictOptions(AnswerOptions):
    """How :func:`~image_classifier.inference.files.predict_files` answers (``predict``'s options)."""

    top_k: int = option(3, metavar="K", check=at_least_one("--top-k"),
                        help="classes to show per image (default: %(default)s)")
    batch_size: int = option(32, metavar="N", check=at_least_one("--batch-size"),
                             help="images per forward pass (default: %(default)s)")


@dataclass(frozen=True, kw_only=True)
class AddOptions:
    """How ``add`` adds a person (:meth:`~image_classifier.inference.model.Classifier.add_class`'s
    keywords of the same names; the cache options make its ``face_cache``)."""

    name: str | None = option(None, help="the person's class name (default: PERSON_DIR's folder name)")
    out: str | os.PathLike = option(metavar="NEW_MODEL_DIR", parse=str, help="where to save the new model")
    seed: int = option(0, help="which photos are kept aside for validation (default: %(default)s)")
    cache: bool = cache_option()
    cache_dir: str | os.PathLike | None = cache_dir_option()
