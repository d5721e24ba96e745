"""The model card (``model.json``), typed: :class:`ModelCard`, read and written here and nowhere else.

A card holds everything needed to rebuild and feed a saved model's network on another machine
(the architecture and its builder options, the class names in order, the preprocessing), its
provenance (recipe, arguments, history, best validation figures, split hash, versions) and what
later steps add: the calibration and the "none of these" rule (``trust``), the exported files
(``export``), the people ``add`` enrolled. An ensemble's card lists its members instead of weights.

A card keeps its keys in the order they were written: a key set for the first time goes last, one
removed (:meth:`ModelCard.remove`) goes, as in the dict the file is, so a card read and written
again is the same file. A key this version does not know is refused, saying what to do.

The entries that belong to one module stay JSON objects, parsed or written by that module:
``preprocessing`` (``Preprocessing.from_dict``), ``rejection`` (``RejectionRule.from_card``),
``ensemble`` (``inference.ensemble``), ``exports`` (``export``), ``faces`` (the face model's head
and bank, written by ``training.face_head``); what any module reads of them by key is a typed
property or method of :class:`ModelCard` here (``input_size``, ``export_record``, ``face_max_distance``, ...).

Imports nothing heavy: the foundation's (``results`` uses :class:`Calibration` too).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from image_classifier.errors import ModelFormatError
from image_classifier.fileio import atomic_write_json
from image_classifier.jsonable import Jsonable, json_field
from image_classifier.runs import CARD_NAME
from image_classifier.version import __version__

FORMAT_VERSION = 1


@dataclass
class Calibration(Jsonable):
    """The temperature(s) fitted on the validation split (the card's ``calibration``, built by
    ``trust.fit``), with the validation NLL and ECE before and after. ``metrics.json`` keeps each
    model's too (:meth:`for_metrics`); the test-split figures are in ``results.TestMetrics``."""

    method: str = "temperature"
    temperature: float = 1.0
    face_temperature: float | None = None  # a face model's face head
    fitted_on: str = "validation"
    images: int = 0
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    face_images: int | None = json_field(default=None, omit="none")  # a face model's: answered by a face
    fallback_images: int | None = json_field(default=None, omit="none")  # ... and by its fallback network
    notes: list[str] | None = json_field(default=None, omit="none")  # e.g. why a temperature was kept at 1
    min_images: int | None = json_field(default=None, omit="none")  # fewer: the temperature is kept at 1

    def part_temperatures(self) -> dict[str, float]:
        """Each part's own temperature by part, beside the network's (a face model's face head:
        ``{"face": T}``; empty for a whole-image CNN)."""
        return {f.name.removesuffix("_temperature"): getattr(self, f.name) for f in fields(self)
                if f.name.endswith("_temperature") and getattr(self, f.name) is not None}

    def for_metrics(self) -> Calibration:
        """What ``metrics.json`` has always kept of it: no image counts, the notes even when none."""
        return replace(self, face_images=None, fallback_images=None, notes=list(self.notes or []), min_images=None)


def _strangers_key(faces: dict[str, Any]) -> str:
    """Where a face card keeps its known faces seen as strangers: ``strangers`` (every training and
    validation photo), or in cards written before it, ``validation_strangers``."""
    return "validation_strangers" if "validation_strangers" in faces and "strangers" not in faces else "strangers"


@dataclass(kw_only=True)
class ModelCard(Jsonable):
    """``model.json``. Only ``architecture``, ``classes`` and ``preprocessing`` are required (an
    ensemble's card has little more); a field that is None is a key the card lacks."""

    format_version: int = FORMAT_VERSION
    architecture: str
    arch_options: dict[str, Any] | None = None  # the builder's options (face_bank_size, ...)
    classes: list[str]
    preprocessing: dict[str, Any]  # ``preprocessing.Preprocessing.to_dict()``
    recipe: dict[str, Any] | None = None
    args: dict[str, Any] | None = None  # the arguments of the run that trained it
    seed: int | None = None
    precision: str | None = None
    threads: int | None = None
    device: dict[str, Any] | None = None
    distributed: dict[str, Any] | None = None
    pretrained_weights: dict[str, Any] | None = None  # {"source", "sha256"} of the ImageNet weights
    split_manifest_sha256: str | None = None
    data: dict[str, Any] | None = None  # images trained and validated on, files skipped
    versions: dict[str, str] | None = None  # of the libraries it was trained with
    status: str | None = None  # "running" (a checkpoint) or "complete"
    history: list[dict[str, Any]] | None = None  # one row per epoch
    best: dict[str, Any] | None = None  # the kept epoch: "epoch", "val_loss", "val_accuracy", ...
    train_seconds: float | None = None
    peak_rss_mb: float | None = None
    phases: list[dict[str, Any]] | None = None
    decode_seconds: float | None = None
    faces: dict[str, Any] | None = None  # a face model's: detector weights, head, bank, max_distance
    weights_file: str | None = None
    weights_sha256: str | None = None
    calibration: Calibration | None = None
    exports: dict[str, Any] | None = None  # ONNX files, backends' accuracy checks
    rejection: dict[str, Any] | None = None  # the "none of these" rule
    ensemble: dict[str, Any] | None = None  # an ensemble's members and how they combine
    added: list[dict[str, Any]] | None = None  # people ``add`` enrolled
    _keys: list[str] = json_field(default_factory=list, skip=True, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._keys = [f.name for f in _FIELDS if getattr(self, f.name) is not None]

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        keys = self.__dict__.get("_keys")
        if keys is not None and name in _NAMES and name not in keys:
            keys.append(name)

    def remove(self, name: str) -> None:
        """Take key ``name`` out of the card (set again, it goes last)."""
        object.__setattr__(self, name, None)
        if name in self._keys:
            self._keys.remove(name)

    def to_json(self) -> dict[str, Any]:
        written = super().to_json()
        return {k: written[k] for k in self._keys}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str | os.PathLike = "the model card") -> ModelCard:
        """The card of ``data`` (``where``: the file, for the errors)."""
        for key in ("architecture", "classes", "preprocessing"):
            if key not in data:
                raise ModelFormatError(f"{where} lacks {key!r}: not a model card written by this tool "
                                       "(train the model with `image-classifier train`)")
        unknown = [k for k in data if k not in _NAMES]
        if unknown:
            raise ModelFormatError(
                f"{where} has {', '.join(map(repr, unknown))}, which image-classifier {__version__} does not know: "
                "it was written by another version; open it with that version, or train the model again with this one")
        try:
            card = super().from_json(data)
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFormatError(f"{where} is not a model card written by this tool ({err}): "
                                   "train the model again (`image-classifier train`)") from err
        card._keys = list(data)
        return card

    def with_(self, **changes: Any) -> ModelCard:
        """A copy with ``changes`` (a key it lacked goes last)."""
        new = ModelCard.from_json(self.to_json())
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    @property
    def finds_faces(self) -> bool:
        """Whether the model answers from the faces it finds (its card has a ``faces`` entry): what a
        caller that must decide before loading the model (``sort`` starting its face workers) reads."""
        return self.faces is not None

    # ---- what modules read of the entries kept as JSON objects (typed here, read nowhere else) ----
    @property
    def input_size(self) -> int | None:
        """The side of the square network input (the preprocessing's ``input_size``)."""
        size = self.preprocessing.get("input_size")
        return None if size is None else int(size)

    @property
    def pretrained_sha256(self) -> str | None:
        """The SHA-256 of the ImageNet weights it started from (None: trained from scratch)."""
        return (self.pretrained_weights or {}).get("sha256")

    def export_record(self, key: str) -> dict[str, Any]:
        """What ``export`` recorded of one file (``onnx``, ``onnx_int8``: its ``file``, ``sha256``, ...); {} if none."""
        return (self.exports or {}).get(key) or {}

    def accuracy_check(self, backend: str) -> dict[str, Any] | None:
        """``export``'s accuracy check of ``backend`` against PyTorch (None: never measured)."""
        return ((self.exports or {}).get("accuracy_checks") or {}).get(backend)

    @property
    def face_weights_sha256(self) -> dict[str, str]:
        """A face model's dlib weights files, by name, as it was fitted with ({} for another model)."""
        return (self.faces or {}).get("weights_sha256") or {}

    @property
    def face_bank_labels(self) -> list[int] | None:
        """Whose face each row of a face model's bank is (class indices; None in older cards)."""
        return ((self.faces or {}).get("bank") or {}).get("labels")

    @property
    def face_bank_sources(self) -> list[str] | None:
        """The SHA-256 of the photo each row of a face model's bank came from (None in older cards;
        rows added by ``add`` come after these and have none)."""
        return ((self.faces or {}).get("bank") or {}).get("sources")

    @property
    def face_head_c(self) -> float:
        """The L2 strength (``C``) a face model's head was fitted with (1.0, scikit-learn's default,
        when the card does not say)."""
        return float(((self.faces or {}).get("head") or {}).get("C") or 1.0)

    @property
    def face_max_distance(self) -> float:
        """How far from every training face a face may be and still decide (inf: no limit)."""
        value = (self.faces or {}).get("max_distance")
        return float("inf") if value is None else float(value)

    @property
    def face_alone_within(self) -> float:
        """How close to a training face a deciding face answers alone, without the fallback (inf:
        always alone, as in models trained before this was recorded)."""
        value = (self.faces or {}).get("alone_within")
        return float("inf") if value is None else float(value)

    @property
    def face_rule_references(self) -> dict[str, list[float]]:
        """A face model's references for its "none of these" rule (``training.face_references``):
        ``faces`` (face distances) and ``pictures`` (picture distances); empty in older cards."""
        entry = (self.faces or {}).get("references") or {}
        return {part: list(entry[part]) for part in ("faces", "pictures") if entry.get(part)}

    @property
    def face_strangers(self) -> dict[str, Any] | None:
        """A face model's known faces seen as strangers (what ``--keep`` trades), when recorded: every
        training and validation photo's (``faces.strangers``), or in cards written before, the
        validation photos' (``faces.validation_strangers``); each says how in ``method``."""
        faces = self.faces or {}
        return faces.get(_strangers_key(faces))

    def faces_with_added(self, bank_faces: int, bank_labels: list[int], head_note: str,
                         stranger_distances: list[float]) -> dict[str, Any]:
        """This face model's ``faces`` entry after ``add``: the bank's size and labels, the head's
        note on how it was refitted, and the known faces seen as strangers joined by ``stranger_distances``."""
        faces = dict(self.faces or {})
        faces["bank"] = {**(faces.get("bank") or {}), "faces": int(bank_faces), "labels": list(bank_labels)}
        faces["head"] = {**(faces.get("head") or {}), "refitted": head_note}
        key = _strangers_key(faces)
        strangers = dict(faces.get(key) or {})
        if "distances" in strangers:
            strangers["distances"] = [round(v, 6) for v in sorted([*strangers["distances"], *stranger_distances])]
        faces[key] = strangers
        return faces

    @property
    def ensemble_member_entries(self) -> list[dict[str, Any]]:
        """An ensemble's members as its card lists them (KeyError/TypeError: not an ensemble's card)."""
        return list(self.ensemble["members"])  # type: ignore[index]

    @property
    def ensemble_combine(self) -> str | None:
        """How an ensemble combines its members (None: the default mean)."""
        return (self.ensemble or {}).get("combine")


_FIELDS = [f for f in dataclasses.fields(ModelCard) if f.name != "_keys"]
_NAMES = frozenset(f.name for f in _FIELDS)


def read_card(model_dir: str | os.PathLike) -> ModelCard:
    """The card of a saved model directory, checked to be one this tool wrote (else ``ModelFormatError``)."""
    path = Path(model_dir) / CARD_NAME
    if not path.is_file():
        raise ModelFormatError(
            f"{model_dir} is not a saved model: {CARD_NAME} is missing (train one with `image-classifier train`)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} is not a model card: train the model again (`image-classifier train`)")
    return ModelCard.from_json(data, path)


def write_card(model_dir: str | os.PathLike, card: ModelCard) -> Path:
    """Write ``card`` as ``model_dir``'s ``model.json`` (atomically); returns the file."""
    path = Path(model_dir) / CARD_NAME
    atomic_write_json(path, card.to_json())
    return path
