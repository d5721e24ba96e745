"""``TrainOptions``: everything one training run takes, checked in one place for Python and the CLI.

The field names are the ``image-classifier train`` options (``--set`` is ``set``, ``--out`` is
``out``, ...), so an error message naming ``--val`` means the same thing in both. Checks that need
only the options run in :meth:`TrainOptions.validate` (before any data is read); checks of the
data or of the model directory run where those are read (:func:`~image_classifier.training.train_folder`,
:func:`~image_classifier.training.train_model`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from image_classifier.data.split import check_fractions
from image_classifier.device import resolve_device
from image_classifier.errors import DatasetError, OptionError, WeightsNotFoundError
from image_classifier.models.registry import get_arch, list_archs
from image_classifier.recipe import Recipe, load_config
from image_classifier.runs import MODELS_DIR, RESUME_NAME
from image_classifier.training.checkpoint import peek_resume_state

#: Where a model is saved when no ``out`` is given: ``models/<arch>`` under the working directory,
#: the same place for the CLI and Python (never a temporary folder: the model is the result), laid
#: out like a compare run's ``models/<arch>``.
DEFAULT_MODELS_DIR = Path(MODELS_DIR)


@dataclass
class TrainOptions:
    """One training run: which architecture, on which split, with which recipe, saved where.

    Recipe overrides apply in this order, each winning over the previous: ``config`` (a TOML
    file), ``epochs`` and ``batch_size``, then ``set``. With none of them (and no ``recipe``), a
    resumed run continues with the recipe it started with.
    """

    #: Architecture name: simple_cnn, alexnet_like, mobilenet_v2, resnet50, face_embedding or any registered one.
    arch: str
    #: Model directory to write (default: ``models/<arch>``, see :attr:`out_dir`).
    out: str | os.PathLike | None = None
    #: Seed of a new split, of the initial weights and of augmentation (default: 0; when resuming: the run's).
    seed: int | None = None
    #: A split manifest from ``image-classifier split`` (default: a new split made with seed/val/test).
    split: str | os.PathLike | None = None
    #: Validation and test fractions of a new split.
    val: float = 0.15
    test: float = 0.15
    #: ImageNet weights file of a pretrained architecture (default: torchvision's cache, $TORCH_HOME).
    weights: str | os.PathLike | None = None
    #: Epochs of every phase of the recipe (a quick try: ``epochs=2``); ``set`` addresses one phase.
    epochs: int | None = None
    #: Images per training step.
    batch_size: int | None = None
    #: Recipe overrides by dotted key, e.g. ``{"phases.finetune.lr": 1e-5, "augmentation.zoom": 0.1}``;
    #: values may be text, as ``--set KEY=VALUE`` gives them.
    set: dict[str, Any] = field(default_factory=dict)
    #: A TOML file of recipe overrides (``--recipe`` prints one).
    config: str | os.PathLike | None = None
    #: A whole recipe to start from instead of the architecture's default.
    recipe: Recipe | None = None
    #: Continue the interrupted run in ``out`` (its split, seed and recipe).
    resume: bool = False
    #: Replace a model or an interrupted run already in ``out`` (otherwise that is an error).
    force: bool = False
    #: CPU threads for training (default: one per core).
    threads: int | None = None
    #: Write the best model and the resume state at most this often (seconds; 0 = every epoch).
    checkpoint_every: float = 30.0
    #: Where decoded images are kept between runs (default: ``default_cache_dir()``); see ``cache``.
    cache_dir: str | os.PathLike | None = None
    #: False: decode in memory only, write no cache files.
    cache: bool = True
    #: Progress bars while training (the per-epoch log lines are always there).
    progress: bool = True
    #: Train convolutions in channels-last memory format (faster on CPUs; the results are the same).
    channels_last: bool = True
    #: Where to train: "auto" (a CUDA GPU when PyTorch sees one, else the CPU), "cpu", "cuda", "cuda:N".
    device: str = "auto"
    #: Mixed precision on a GPU (bf16 where the GPU has it, else fp16 with a gradient scaler);
    #: False trains in fp32 there. On a CPU the recipe's ``precision`` decides.
    amp: bool = True
    #: "None of these": the fraction of the known validation images the rejection rule keeps
    #: (fitted after training; images less like the classes than the rest answer "unknown").
    keep: float = 0.95

    @property
    def out_dir(self) -> Path:
        """The model directory: ``out``, else ``models/<arch>``."""
        return Path(self.out) if self.out is not None else DEFAULT_MODELS_DIR / self.arch

    @classmethod
    def from_kwargs(cls, **options: Any) -> TrainOptions:
        """Options given by name, as the Python API takes them; a misspelt name is an
        :class:`OptionError` that lists the valid ones (a dataclass would say only "unexpected
        keyword argument")."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            allowed = ", ".join(sorted(known - {"arch", "out"}))
            raise OptionError(f"unknown training option(s) {', '.join(unknown)}; the options are {allowed}")
        return cls(**options)

    def validate(self) -> TrainOptions:
        """Raise :class:`~image_classifier.errors.OptionError` (a ``ValueError``) naming the first
        option that cannot work and what to do instead (a missing ``weights`` file:
        :class:`~image_classifier.errors.WeightsNotFoundError`); returns self. Reads no data."""
        try:
            spec = get_arch(self.arch)
        except KeyError as err:
            raise OptionError(err.args[0]) from None
        try:
            check_fractions(self.val, self.test)
        except DatasetError as err:
            raise OptionError(str(err)) from None
        if self.epochs is not None and self.epochs < 1:
            raise OptionError(f"epochs must be at least 1, not {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"threads must be at least 1, not {self.threads}")
        if self.checkpoint_every < 0:
            raise OptionError("--checkpoint-every must be 0 or more seconds")
        if self.resume and self.force:
            raise OptionError("--resume and --force contradict each other: choose one")
        resolve_device(self.device)  # "cuda" on a machine without one fails here, before any data is read
        if not 0.0 < float(self.keep) < 1.0:
            raise OptionError(f"--keep must be between 0 and 1 (the fraction of known validation images the "
                              f"rejection rule keeps, e.g. 0.95), not {self.keep}")
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
