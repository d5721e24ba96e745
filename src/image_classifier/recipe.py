"""Training recipes: the defaults each architecture trains with, overridable from the CLI or a file.

A recipe is a list of phases (e.g. "frozen" then "finetune") plus the settings shared by all of them.
Phases name which part of the network trains through ``trainable_from``: an index into the
network's ``backbone`` (see :mod:`image_classifier.models.net`); ``None`` trains the head only,
``0`` trains everything.

Overrides are dotted keys (``phases.finetune.lr``), given on the command line (``--set KEY=VALUE``)
or in a TOML file (:func:`load_config`) whose tables nest the same keys.
"""
from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

PRECISIONS = ("bf16", "fp32")
AUGMENTATION_ENGINES = ("batched", "torchvision")
AUGMENTATION_INTERPOLATIONS = ("bilinear", "nearest")


@dataclass
class Augmentation:
    """The study's Keras ``ImageDataGenerator`` settings, in its units.

    ``shear`` is in degrees, as Keras interprets ``shear_range`` (so the study's 0.2 is a very
    small shear); shifts are fractions of the width/height; ``zoom`` 0.3 means a scale drawn from
    [0.7, 1.3].
    """

    rotation: float = 20.0
    width_shift: float = 0.2
    height_shift: float = 0.2
    shear: float = 0.2
    zoom: float = 0.3
    horizontal_flip: bool = True
    #: "batched": one affine_grid/grid_sample call per batch with a random matrix per image and
    #: edge-replicating fill (Keras' fill_mode="nearest"), measured faster; "torchvision":
    #: transforms.v2.RandomAffine + RandomHorizontalFlip image by image (isotropic zoom, black fill).
    engine: str = "batched"
    #: How transformed pixels are sampled. "bilinear" is Keras' (``order=1``); "nearest" is
    #: torchvision's RandomAffine default and keeps training images as sharp as the untransformed
    #: images the model is validated and used on (see the ResNet-50 recipe for the measurement).
    interpolation: str = "bilinear"


@dataclass
class Phase:
    name: str
    epochs: int
    lr: float
    trainable_from: int | None = 0


@dataclass
class Recipe:
    phases: list[Phase]
    batch_size: int = 32
    optimizer: str = "adam"
    weight_decay: float = 0.0
    early_stopping_patience: int = 10
    plateau_patience: int = 5
    plateau_factor: float = 0.2
    min_lr: float = 1e-7
    #: Adam's epsilon: Keras' default (1e-7), not PyTorch's (1e-8), since the study used Keras.
    optimizer_eps: float = 1e-7
    #: "bf16": autocast matmuls/convolutions to bfloat16 where the CPU has native bf16 (weights,
    #: optimizer and loss stay fp32); falls back to fp32 elsewhere. "fp32": everything in fp32.
    precision: str = "bf16"
    #: Phases that train only the top of the network run the frozen bottom once per augmented view
    #: of the training set and cache its output: epoch k < feature_views uses a fresh view k; later
    #: epochs draw, for each image, one of the cached views at random.
    feature_views: int = 8
    augmentation: Augmentation = field(default_factory=Augmentation)
    notes: str = ""

    def validate(self) -> Recipe:
        """Raise ``ValueError`` naming the first setting that cannot work; returns self."""
        if not self.phases:
            raise ValueError("a recipe needs at least one phase")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        for p in self.phases:
            if p.epochs < 1:
                raise ValueError(f"phases.{p.name}.epochs must be at least 1, not {p.epochs}")
            if not p.lr > 0:
                raise ValueError(f"phases.{p.name}.lr must be positive, not {p.lr}")
            if p.trainable_from is not None and p.trainable_from < 0:
                raise ValueError(f"phases.{p.name}.trainable_from must be >= 0 or none, not {p.trainable_from}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.optimizer.lower() != "adam":
            raise ValueError(f"optimizer {self.optimizer!r} is not supported (only 'adam')")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.feature_views < 1:
            raise ValueError(f"feature_views must be at least 1, not {self.feature_views}")
        if self.early_stopping_patience < 1 or self.plateau_patience < 0:
            raise ValueError("early_stopping_patience must be >= 1 and plateau_patience >= 0")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be between 0 and 1, not {self.plateau_factor}")
        if self.augmentation.engine not in AUGMENTATION_ENGINES:
            raise ValueError(f"augmentation.engine must be one of {AUGMENTATION_ENGINES}, not {self.augmentation.engine!r}")
        if self.augmentation.interpolation not in AUGMENTATION_INTERPOLATIONS:
            raise ValueError(f"augmentation.interpolation must be one of {AUGMENTATION_INTERPOLATIONS}, "
                             f"not {self.augmentation.interpolation!r}")
        if not 0 <= self.augmentation.zoom < 1:
            raise ValueError(f"augmentation.zoom must be in [0, 1), not {self.augmentation.zoom}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        data = dict(data)
        phases = [Phase(**p) for p in data.pop("phases")]
        aug = Augmentation(**data.pop("augmentation", {}))
        return cls(phases=phases, augmentation=aug, **data)

    def with_overrides(self, overrides: dict[str, Any]) -> Recipe:
        """Return a copy with dotted-key overrides applied, e.g. ``{"batch_size": 16,
        "augmentation.zoom": 0.1, "phases.finetune.lr": 1e-5, "phases.0.epochs": 3}``.

        Unknown keys raise ``KeyError`` naming the valid ones, so a typo never passes silently.
        """
        recipe = copy.deepcopy(self)
        for key, value in overrides.items():
            _set_dotted(recipe, key.split("."), value, key)
        return recipe


def _set_dotted(obj: Any, parts: list[str], value: Any, full_key: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(obj, list):
        target = _find_phase(obj, head, full_key)
        if not rest:
            raise KeyError(f"{full_key!r}: name a field of the phase, e.g. {full_key}.epochs")
        _set_dotted(target, rest, value, full_key)
        return
    names = [f.name for f in fields(obj)]
    if head not in names:
        raise KeyError(f"unknown recipe key {full_key!r}; valid keys here: {', '.join(names)}")
    if rest:
        _set_dotted(getattr(obj, head), rest, value, full_key)
        return
    current = getattr(obj, head)
    if is_dataclass(current) or isinstance(current, list):
        raise KeyError(f"{full_key!r} is a group; set one of its fields instead")
    setattr(obj, head, _coerce(value, current, full_key))


def _find_phase(phases: list[Phase], key: str, full_key: str) -> Phase:
    if key.isdigit() and int(key) < len(phases):
        return phases[int(key)]
    for phase in phases:
        if phase.name == key:
            return phase
    raise KeyError(f"{full_key!r}: no phase {key!r}; phases are {[p.name for p in phases]}")


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Convert CLI strings (and TOML numbers) to the type of the default they replace."""
    if key.endswith("trainable_from") and isinstance(value, str) and value.lower() in ("none", "null", "head"):
        return None  # "train the head only"; TOML has no null, so the string stands for it
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or isinstance(current, str):
        return value
    if current is None:
        return None if value.lower() in ("none", "null") else int(value)
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    try:
        return type(current)(value)
    except ValueError as err:
        raise ValueError(f"{key}: expected {type(current).__name__}, got {value!r}") from err


def flatten_config(data: dict[str, Any], arch: str | None = None, *, known_archs: tuple[str, ...] = ()) -> dict[str, Any]:
    """Nested config tables -> dotted override keys.

    A table named after an architecture (``[resnet50]``, ``[resnet50.phases.finetune]``) applies only
    to that architecture; everything else applies to all. ``phases`` tables are addressed by phase
    name or index, as in :meth:`Recipe.with_overrides`.
    """
    out: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    general = {k: v for k, v in data.items() if k not in known_archs}
    walk(general, "")
    if arch is not None and isinstance(data.get(arch), dict):
        walk(data[arch], "")  # architecture-specific values win over general ones
    return out


def load_config(path: str | os.PathLike, arch: str | None = None, *,
                known_archs: Iterable[str]) -> dict[str, Any]:
    """Read a TOML recipe file into dotted overrides for ``arch`` (see :func:`flatten_config`).

    ``known_archs``: every architecture name (``models.list_archs()``), so that a table named
    after another architecture is left out rather than read as general settings. Passed in, not
    looked up here: the registry builds its default recipes from this module.

    Example::

        batch_size = 16
        [augmentation]
        zoom = 0.2
        [resnet50.phases.finetune]
        epochs = 5
    """
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        raise ValueError(f"{path}: YAML is not supported (PyYAML is not a dependency); write the same keys as TOML")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read recipe file {path}: {err.strerror or err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from err
    return flatten_config(data, arch, known_archs=tuple(known_archs))


def parse_set_options(items: list[str] | None) -> dict[str, str]:
    """``["phases.0.epochs=3", "batch_size=16"]`` -> ``{"phases.0.epochs": "3", "batch_size": "16"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. phases.0.epochs=3), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def recipe_to_toml(recipe: Recipe) -> str:
    """The recipe as a TOML document that :func:`load_config` reads back (for ``--recipe``)."""
    data = recipe.to_dict()
    lines: list[str] = []

    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(value)

    for key, value in data.items():
        if key not in ("phases", "augmentation"):
            lines.append(f"{key} = {fmt(value)}")
    lines.append("\n[augmentation]")
    lines += [f"{k} = {fmt(v)}" for k, v in data["augmentation"].items()]
    for phase in data["phases"]:
        lines.append(f"\n[phases.{phase['name']}]")
        for k, v in phase.items():
            if k == "name":
                continue
            # TOML has no null: "none" is what --set and the file reader accept for "head only".
            lines.append(f"{k} = {fmt(v) if v is not None else fmt('none')}")
    return "\n".join(lines) + "\n"
