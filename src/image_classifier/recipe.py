"""Training recipes: the defaults each architecture trains with, overridable from the CLI or a file.

A recipe is a list of phases (e.g. "frozen" then "finetune") plus the settings shared by all of them.
Phases name which part of the network trains through ``trainable_from``: an index into the
network's ``backbone`` (see :mod:`image_classifier.models.net`); ``None`` trains the head only,
``0`` trains everything.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any


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
    augmentation: Augmentation = field(default_factory=Augmentation)
    notes: str = ""

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
    """Convert CLI strings to the type of the default they replace."""
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
