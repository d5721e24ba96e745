"""The ``Model`` base class: what every kind of loaded model offers, so that callers never ask its kind.

Three kinds implement it: the whole-image CNN (:class:`~.classifier.Classifier`), the face model
(:class:`~.face_model.FaceClassifier`) and the ensemble (:class:`~.ensemble.EnsembleClassifier`);
:mod:`.kinds` says which card opens as which. Each owns (the abstract methods below) its decoding
and preparing, its forward pass, its temperatures, how its "none of these" rule is fitted, its
explanation, its shortcut-audit inputs and what its timing measures; what they share (``predict``,
``predict_proba``, ``predict_details``, ``predict_frame``, ``with_keep``, ...) is written once here
from those steps (docs/architecture.md, "The Model protocol").
"""
from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from image_classifier.card import ModelCard
from image_classifier.data.decode import decode_each
from image_classifier.errors import OptionError
from image_classifier.fileio import sha256_file
from image_classifier.inference.inputs import as_sources
from image_classifier.inference.calibration import uncalibrated as undo_temperatures
from image_classifier.inference.enrol import not_a_face_model
from image_classifier.inference.rejection import UNKNOWN, RejectionRule, tradeoff
from image_classifier.inference.rows import FACE_COLUMNS, PHOTO_COLUMNS, face_rows, photo_row, table

ImageSource = Image.Image | str | os.PathLike | bytes | BinaryIO


@dataclass
class Prepared:
    """Images made ready for the backend (see :meth:`Model.prepare`)."""

    batch: np.ndarray  # (len(rows), ...) float32: the inputs of the backend's forward pass
    rows: list[int]  # which images those are
    direct: dict[int, np.ndarray]  # image index -> probabilities found without the backend
    details: list[dict[str, Any]]  # per image: what decided it

    @property
    def size(self) -> int:
        # Every prepared image has its details; a cascade's face member has neither a row nor a
        # direct answer for the images its face did not decide.
        return len(self.details)


class Model(ABC):
    """A loaded model of any kind (see the module docstring)."""

    classes: list[str]
    card: ModelCard
    model_dir: Path | None
    preprocessing: Any  # image_classifier.preprocessing.Preprocessing (each member's own, in an ensemble)
    backend: Any  # what computes: ``name`` and ``describe()``
    backend_reason: str
    reject: bool
    rejection_rule: RejectionRule | None

    # ---- what each kind does its own way ----------------------------------------------------------
    @property
    @abstractmethod
    def arch(self) -> str: ...
    @property
    @abstractmethod
    def device(self) -> Any: ...
    @property
    @abstractmethod
    def decode_key(self) -> Any:
        """What :meth:`decode` produces: equal keys mean a decoded image can be shared."""
    @property
    @abstractmethod
    def features_network(self) -> Any:
        """The network whose penultimate features characterise an image (leave-one-class-out), or None."""

    @abstractmethod
    def decode(self, source: Any, *, max_pixels: int | None = None) -> Any:
        """One image made ready for :meth:`predict`; raises ``UnreadableImageError`` for bad input."""
    @abstractmethod
    def prepare(self, images: Sequence[Any]) -> Any:
        """Everything before the backend's forward pass (the server's batcher runs these four steps)."""
    @abstractmethod
    def predict_tensor(self, batch: Any) -> np.ndarray: ...
    @abstractmethod
    def finish(self, prepared: Any, forward: np.ndarray | None) -> np.ndarray: ...

    @property
    def reads_features(self) -> bool:
        """Whether :meth:`predict_tensor` also needs the network's pooled features (the backend's
        ``predict_features``; an exported ONNX graph then gives them as a second output)."""
        return False

    @property
    def forward_width(self) -> int:
        """Columns of a :meth:`predict_tensor` row (what :meth:`finish` reads): the classes' probabilities."""
        return len(self.classes)
    @abstractmethod
    def judge(self, probabilities: np.ndarray, details: list[dict[str, Any]]) -> list[bool]:
        """Add the "none of these" answer to each image's details, in place; the ``unknown`` flags."""
    @abstractmethod
    def forward_input(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The input of :meth:`predict_tensor` for pictures (what timing the forward pass needs)."""
    @abstractmethod
    def temperatures(self, details: Sequence[dict[str, Any]] | None, n: int,
                     card: ModelCard | None = None) -> np.ndarray:
        """The temperature that made each of ``n`` rows answered with ``details``, by ``card``'s
        calibration (default this model's)."""
    @abstractmethod
    def fit_temperatures(self, logprobs: np.ndarray, labels: np.ndarray, details: Sequence[dict[str, Any]],
                         calibrate: Callable[[np.ndarray, np.ndarray], Any]
                         ) -> tuple[dict[str, Any], np.ndarray, list[str], dict[str, Any]]:
        """Its temperatures fitted by ``calibrate`` (``trust.temperature.calibrate``) on validation
        ``logprobs`` with ``labels``: (their card keys, each row's temperature, notes, other card keys)."""
    @abstractmethod
    def fit_rejection_rule(self, uncalibrated_probs: np.ndarray, details: Sequence[dict[str, Any]],
                           keep: float) -> RejectionRule:
        """The "none of these" rule fitted on validation predictions (as :meth:`judge` scores them)."""
    @abstractmethod
    def explain(self, image: Any, *, target: str | int | None = None, decoded: Any = None,
                max_side: int = 512) -> Any:
        """Why it answers what it does for ``image``: an ``inference.explain.Explanation``."""
    @abstractmethod
    def shortcut_inputs(self, variant: str, images: Sequence[Image.Image], analyses: Sequence[Any],
                        grey: Callable[[int], np.ndarray | None]) -> list[Any]:
        """What it predicts for the shortcut audit's ``variant`` of test pictures (their faces'
        ``analyses``; ``grey(k)``: the descriptors of picture k's greyscale faces)."""

    # ---- what every kind does the same way, from those ---------------------------------------------
    def networks(self) -> list[Any]:
        """The single-network models it computes with (parameters, FLOPs, size): itself; an ensemble's members."""
        return [self]

    def uncalibrated(self, probs: np.ndarray, details: Sequence[dict[str, Any]] | None = None,
                     card: ModelCard | None = None) -> np.ndarray:
        """The probabilities before calibration, from calibrated ``probs`` and ``details`` as
        :meth:`predict_details` returned them; float32, equal to ``probs`` without calibration.
        ``card``: the card whose calibration made ``probs`` (default this model's)."""
        return undo_temperatures(probs, self.temperatures(details, len(probs), card))

    @property
    def rejects(self) -> bool:
        """True when this model can answer "unknown": it has a rule and ``reject`` is on."""
        return self.reject and self.rejection_rule is not None

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def decode_from(self, path: Path, cache: Any) -> Any:
        """:meth:`decode` of ``path`` for ``cache`` (a :class:`~image_classifier.evaluate.evaluation.DecodeCache`;
        an ensemble assembles it from its members' entries there)."""
        return self.decode(path)

    def for_timing(self) -> Model:
        """This model as its latency is measured: without caches that would time a lookup."""
        return self

    @property
    def forward_is_whole(self) -> bool:
        """Whether the timed forward pass (:meth:`predict_tensor` on a ready input) is all this model
        computes per image. False where work happens outside it (a face model finds and describes
        faces first): its cost per image is then the file -> label time."""
        return True

    def predict_details(self, images: Any, batch_size: int = 32, *, bgr: bool = False
                        ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Like :meth:`predict_proba`, plus per image what decided it (for a face model: ``face``, the
        box ``[x0, y0, x1, y1]`` of the face whose descriptor answered, or None where the fallback did,
        ``face_index``, its place among ``faces``, and ``faces``: every face found, each with its own
        ``label``, ``probability``, ``distance`` and ``box``) and the "none of these" answer:
        ``unknown`` (bool), ``closest`` ({label, probability}: the most probable class, shown also
        when unknown) and ``rejection`` ({score, threshold, kind}, or None when the model has no
        rule or ``reject`` is off).

        ``images``: one image or a list (a path, a folder, bytes, a stream, a PIL image, a numpy
        ``H x W x 3`` uint8 array, RGB, or BGR with ``bgr=True``: see
        :mod:`image_classifier.inference.inputs`); a folder stands for every file under it."""
        images, _ = as_sources(images, bgr=bgr)
        probs, details = [], []
        for start in range(0, len(images), batch_size):
            prepared = self.prepare(images[start:start + batch_size])
            forward = self.predict_tensor(prepared.batch) if prepared.rows else None
            probs.append(self.finish(prepared, forward))
            details.extend(prepared.details)
        out = np.concatenate(probs) if probs else np.empty((0, len(self.classes)), dtype=np.float32)
        self.judge(out, details)
        return out, details

    def predict_paths(self, items: Sequence[Any], cache: Any = None, *, what: str | None = "image",
                      batch_size: int = 32) -> tuple[np.ndarray, list[dict[str, Any]], Any]:
        """:meth:`predict_details` of the files of ``items`` (anything with ``path``) that decode, each
        decoded through ``cache`` when given (``get(path, model)``: an ``evaluate.evaluation.DecodeCache``,
        so that images decoded for another model of the same input are not decoded again). An
        unreadable file is left out with a warning naming its ``rel_path``. Returns the probabilities,
        the details and what ``decode_each`` returned (``kept``: the indices of the items answered)."""
        decoded = decode_each(items, lambda it: self.decode(it.path) if cache is None else cache.get(it.path, self),
                              what=what, name=lambda it: getattr(it, "rel_path", it.path))
        if not decoded.images:
            return np.empty((0, len(self.classes))), [], decoded
        probs, details = self.predict_details(decoded.images, batch_size)
        return probs, details, decoded

    def predict_proba(self, images: Any, batch_size: int = 32, *, bgr: bool = False) -> np.ndarray:
        """Class probabilities, shape (number of images, len(classes)), rows in ``self.classes``
        order; ``images`` as :meth:`predict_details` takes them.

        The whole path (file -> decode -> resize -> normalise -> backend) is what a user waits for;
        with the ONNX backend it runs without PyTorch."""
        return self.predict_details(images, batch_size, bgr=bgr)[0]

    def predict(self, images: Any, batch_size: int = 32, *, bgr: bool = False) -> list[str]:
        """The most probable class name of each image (see :meth:`predict_proba` for the probabilities),
        or ``"unknown"`` where the model's rejection rule finds the image like none of its classes
        (only when :attr:`reject` is on and the model has a rule). ``images``: one image or a list
        (paths, a folder, PIL images, numpy arrays; see :meth:`predict_details`); always a list back."""
        probs, details = self.predict_details(images, batch_size, bgr=bgr)
        return [UNKNOWN if d["unknown"] else self.classes[i] for i, d in zip(probs.argmax(axis=1), details)]

    @property
    def name(self) -> str:
        """The model's name in tables: its directory's name (a run's ``best`` resolved)."""
        model_dir = getattr(self, "model_dir", None)
        return Path(model_dir).resolve().name if model_dir is not None else str(getattr(self, "arch", "model"))

    def predict_frame(self, images: Any, batch_size: int = 32, *, bgr: bool = False, faces: bool = False) -> Any:
        """The answers as a table with the columns of ``image-classifier sort``'s ``predictions.csv``
        (:data:`~image_classifier.inference.rows.PHOTO_COLUMNS`; with ``faces=True`` one row per face,
        the columns of ``faces.csv``): a pandas DataFrame when pandas is installed, else a list of
        dicts. ``images`` as :meth:`predict_details` takes them; a file that cannot be read is left
        out (with a warning) and the others are answered. ``sha256`` is the file's content hash
        (None for pictures given in memory)."""
        sources, names = as_sources(images, bgr=bgr)
        decoded = decode_each(sources, self.decode, name=lambda src: src if isinstance(src, (str, os.PathLike)) else "image")
        probs, details = self.predict_details(decoded.images, batch_size) if decoded.images else (
            np.empty((0, len(self.classes))), [])
        rows: list[dict[str, Any]] = []
        for i, row, detail in zip(decoded.kept, probs, details):
            src = sources[i]
            sha = _file_sha256(src) if isinstance(src, (str, os.PathLike)) else None
            if faces:
                rows.extend(face_rows(names[i], detail, self.name, sha))
            else:
                rows.append(photo_row(names[i], row, detail, self.classes, self.name, sha))
        return table(rows, FACE_COLUMNS if faces else PHOTO_COLUMNS)

    def predict_folder(self, folder: str | os.PathLike, batch_size: int = 32, *, faces: bool = False) -> Any:
        """:meth:`predict_frame` on every file under ``folder`` (at any depth, sorted by path)."""
        if not Path(folder).is_dir():
            raise NotADirectoryError(f"{folder} is not a folder")
        return self.predict_frame(folder, batch_size, faces=faces)

    def tradeoff(self) -> dict[str, Any] | None:
        """What the "none of these" threshold in force trades (None: no rule): the share of the known
        photos it was fitted on that it keeps and, for a face model, the share of known faces seen as
        strangers it accepts (see :func:`~image_classifier.inference.rejection.tradeoff`)."""
        if self.rejection_rule is None:
            return None
        return tradeoff(self.rejection_rule, self.card.face_strangers)

    def add_class(self, name: str, images: Any, *, out: str | os.PathLike | None = None, seed: int = 0,
                  face_cache: Any = None) -> Model:
        """One more person without retraining: only a face model can (see
        :meth:`FaceClassifier.add_class`); any other kind is refused, saying what to run instead."""
        raise not_a_face_model(self.card)

    def face_namer(self, same_person: float) -> Callable[[np.ndarray], list[str | None]]:
        """What names faces from their 128-D descriptors for ``group --model``: per descriptor the
        class this model gives that face, or None where it is like no known person (or further than
        ``same_person`` from every training face). Only a model that answers from faces can; any
        other kind is refused here, before the caller does any work."""
        raise OptionError(
            f"{self.name} ({self.arch}) answers from the whole image, not from faces, so it cannot name the faces of "
            "a group: give group --model a face model (face_embedding; compare trains one for a folder of "
            "people: pass runs/NAME or runs/NAME/models/face_embedding)")

    def with_keep(self, keep: float) -> Model:
        """This model with its "none of these" threshold moved to keep ``keep`` of the known
        validation images (``--keep``; the card's rule keeps ``DEFAULT_KEEP`` unless trained with another):
        the stored validation scores give the new threshold, nothing is refitted or predicted
        again. Lower keeps fewer known photos and lets fewer strangers through."""
        if self.rejection_rule is None:
            raise OptionError(f"--keep: {self.name} has no \"none of these\" rule (it was saved before models had "
                              "one): retrain it with `image-classifier train`, or leave --keep out")
        clone = copy.copy(self)
        clone.rejection_rule = self.rejection_rule.with_keep(keep)
        return clone


def _file_sha256(path: str | os.PathLike) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None
