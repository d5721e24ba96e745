"""``TrainOptions``: everything one training run takes, checked in one place for Python and the CLI.

The field names are the ``image-classifier train`` options (``--set`` is ``set``, ``--out`` is
``out``, ...), so an error message naming ``--val`` means the same thing in both. Checks that need
only the options run in :meth:`TrainOptions.validate` (before any data is read); checks of the
data or of the model directory run where those are read (:func:`~image_classifier.training.train_folder`,
:func:`~image_classifier.training.train_model`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image_classifier.data.options import DEFAULT_FRACTION, check_fractions
from image_classifier.errors import DatasetError, OptionError, WeightsNotFoundError
from image_classifier.optionspec import (
    DEFAULT_KEEP, DEVICE_HELP, DEVICE_METAVAR, at_least_one, build, cache_dir_option, cache_option, check_keep,
    check_options, option,
)
from image_classifier.recipe import Recipe, load_config, parse_set_options
from image_classifier.runs import MODELS_DIR, RESUME_NAME

# This module is light (the heavy ones are imported inside the methods that use them): the command
# line builds `train --help` from TrainOptions without loading torch.

#: Where a model is saved when no ``out`` is given: ``models/<arch>`` under the working directory,
#: the same place for the CLI and Python (never a temporary folder: the model is the result), laid
#: out like a compare run's ``models/<arch>``.
DEFAULT_MODELS_DIR = Path(MODELS_DIR)


def _parse_set(items: list[str]) -> dict[str, Any]:
    try:
        return parse_set_options(items)
    except ValueError as err:
        raise OptionError(f"bad recipe option: {err}") from None


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _check_checkpoint_every(seconds: float) -> float:
    if seconds < 0:
        raise OptionError("--checkpoint-every must be 0 or more seconds")
    return seconds


@dataclass
class TrainOptions:
    """One training run: which architecture, on which split, with which recipe, saved where.

    Each field is the ``image-classifier train`` option of the same name (``set`` is ``--set``,
    ``cache=False`` is ``--no-cache``), declared once with its help and check: the parser and the
    ``torchrun`` command line are derived from these fields (:mod:`image_classifier.optionspec`).
    Recipe overrides apply in this order, each winning over the previous: ``config`` (a TOML
    file), ``epochs`` and ``batch_size``, then ``set``. With none of them (and no ``recipe``), a
    resumed run continues with the recipe it started with.
    """

    arch: str = option(metavar="NAME", help="architecture: simple_cnn, alexnet_like, mobilenet_v2, resnet50 (or any "
                                            "registered one)")
    split: str | os.PathLike | None = option(None, metavar="CSV", help="split manifest from `image-classifier split` "
                                                                       "(default: make one with --seed/--val/--test)")
    val: float = option(DEFAULT_FRACTION, help="validation fraction of a new split (default: %(default)s)")
    test: float = option(DEFAULT_FRACTION, help="test fraction of a new split (default: %(default)s)")
    out: str | os.PathLike | None = option(None, metavar="DIR", help="model directory to write (default: models/ARCH)")
    weights: str | os.PathLike | None = option(
        None, metavar="PATH", parse=str, help="ImageNet weights file for a pretrained architecture (ARCH=PATH, as "
        "`compare` takes it, works too; default: torchvision's cache, $TORCH_HOME/hub/checkpoints)")
    seed: int | None = option(None, help="seed of the split, initialisation and augmentation (default: 0; with "
                                         "--resume: the interrupted run's)")
    config: str | os.PathLike | None = option(None, metavar="FILE.toml", help="recipe overrides from a TOML file")
    set: dict[str, Any] = option(
        factory=dict, metavar="KEY=VALUE", repeat=_parse_set,
        show=lambda values: [f"{key}={_text(value)}" for key, value in values.items()],
        help="override one recipe value, e.g. phases.0.epochs=3, batch_size=16, augmentation.zoom=0.1, precision=fp32 "
             "(repeatable; wins over --config); from Python a dict, values as text or not", was="recipe_overrides")
    epochs: int | None = option(None, metavar="N", check=at_least_one("epochs"),
                                help="epochs of every phase of the recipe (a quick try: --epochs 2)")
    batch_size: int | None = option(None, metavar="N", check=at_least_one("batch_size"),
                                    help="images per training step, over all processes of a torchrun job (default: "
                                         "the recipe's)")
    recipe: Recipe | None = option(None, cli=False, help="a whole recipe to start from instead of the architecture's "
                                                         "default (the CLI's --recipe prints the effective one)")
    resume: bool = option(False, help="continue the interrupted run in --out (its split, seed and recipe)")
    force: bool = option(False, help="replace a model already in --out")
    cache_dir: str | os.PathLike | None = cache_dir_option()
    cache: bool = cache_option()
    checkpoint_every: float = option(30.0, metavar="SECONDS", check=_check_checkpoint_every,
                                     help="write the best model and the resume state at most this often (default: "
                                          "%(default)s; 0 = every epoch)")
    threads: int | None = option(None, metavar="N", check=at_least_one("threads"),
                                 help="CPU threads (default: one per core)")
    device: str = option("auto", metavar=DEVICE_METAVAR, help=DEVICE_HELP)
    amp: bool = option(True, help="on a GPU, train in fp32 instead of mixed precision (bf16, or fp16 with a gradient "
                                  "scaler); on a CPU the recipe's precision decides")
    keep: float = option(DEFAULT_KEEP, metavar="FRACTION", check=check_keep,
                         help="\"none of these\": the fraction of the known validation images the rejection rule "
                              "keeps; a photo less like the classes than the rest is answered \"unknown\" "
                              "(default: %(default)s)")
    progress: bool = option(True, help="no progress bars (the per-epoch lines remain)")
    channels_last: bool = option(True, cli=False, help="train convolutions in channels-last memory format (faster "
                                                       "on CPUs; the results are the same)")

    @property
    def out_dir(self) -> Path:
        """The model directory: ``out``, else ``models/<arch>``."""
        return Path(self.out) if self.out is not None else DEFAULT_MODELS_DIR / self.arch

    @classmethod
    def from_kwargs(cls, **options: Any) -> TrainOptions:
        """Options given by name, as the Python API takes them; a misspelt name is an
        :class:`~image_classifier.errors.UnknownOptionError` that lists the valid ones."""
        return build(cls, "training", options)

    def validate(self) -> TrainOptions:
        """Raise :class:`~image_classifier.errors.OptionError` (a ``ValueError``) naming the first
        option that cannot work and what to do instead (a missing ``weights`` file:
        :class:`~image_classifier.errors.WeightsNotFoundError`); returns self. Reads no data."""
        from image_classifier.device import resolve_device
        from image_classifier.models.registry import get_arch

        try:
            spec = get_arch(self.arch)
        except KeyError as err:
            raise OptionError(err.args[0]) from None
        try:
            check_fractions(self.val, self.test)
        except DatasetError as err:
            raise OptionError(str(err)) from None
        check_options(self)
        if self.resume and self.force:
            raise OptionError("--resume and --force contradict each other: choose one")
        resolve_device(self.device)  # "cuda" on a machine without one fails here, before any data is read
        if self.weights is not None:
            if spec.pretrained is None:
                raise OptionError(f"{self.arch} trains from scratch: it takes no pretrained --weights")
            if not Path(self.weights).expanduser().is_file():
                raise WeightsNotFoundError(f"--weights {self.weights}: no such file (the ImageNet weights of "
                                           f"{self.arch} were not found there)")
        self.effective_recipe()  # a bad override or config file fails here, before any data is read
        return self

    def resume_state(self) -> dict[str, Any]:
        """What the interrupted run in :attr:`out_dir` started with (arch, seed, recipe, ...), when
        resuming one; else empty."""
        path = self.out_dir / RESUME_NAME
        if self.resume and not self.force and path.is_file():
            from image_classifier.training.checkpoint import peek_resume_state

            return peek_resume_state(path)
        return {}

    def effective_seed(self) -> int:
        """``seed``, else the resumed run's, else 0."""
        return self.seed if self.seed is not None else int(self.resume_state().get("seed", 0))

    def has_overrides(self) -> bool:
        return bool(self.set) or any(v is not None for v in (self.config, self.epochs, self.batch_size, self.recipe))

    def effective_recipe(self) -> Recipe:
        """The recipe this run trains with: the base (``recipe``, the resumed run's when nothing
        overrides it, else the architecture's default) with the overrides applied, validated."""
        from image_classifier.models.registry import get_arch, list_archs

        resumed = self.resume_state().get("recipe")
        if self.recipe is not None:
            base = self.recipe
        elif resumed and not self.has_overrides():
            base = Recipe.from_dict(resumed)  # continue as started
        else:
            base = get_arch(self.arch).default_recipe()
        try:
            overrides = load_config(self.config, self.arch, known_archs=list_archs()) if self.config is not None else {}
            if self.epochs is not None:
                overrides.update({f"phases.{i}.epochs": self.epochs for i in range(len(base.phases))})
            if self.batch_size is not None:
                overrides["batch_size"] = self.batch_size
            overrides.update(self.set)
            return base.with_overrides(overrides).validate()
        except KeyError as err:  # an unknown key: the message names the valid ones
            raise OptionError(f"bad recipe option: {err.args[0]}") from None
        except ValueError as err:
            raise OptionError(f"bad recipe option: {err}") from None
