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
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from image_classifier.errors import ModelFormatError
from image_classifier.preprocessing import Preprocessing

log = logging.getLogger(__name__)

CARD_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT_VERSION = 1
# Inference backends a loaded model can run on. "onnx" and "auto" (fastest measured) come with export.
BACKENDS = ("torch",)

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 files; give the final file the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_model(module: torch.nn.Module, card: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Save ``module``'s weights and ``card`` into ``out_dir`` atomically; returns the directory.

    ``card`` must hold at least ``architecture``, ``classes`` and ``preprocessing`` (a dict);
    ``format_version``, ``weights_sha256`` and ``versions`` are filled in here.
    """
    from safetensors.torch import save as st_save

    for key in ("architecture", "classes", "preprocessing"):
        if key not in card:
            raise ValueError(f"model card needs {key!r}")
    out = Path(out_dir)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    blob = st_save(state, metadata={"format": "pt"})
    atomic_write_bytes(out / WEIGHTS_NAME, blob)
    full_card = {
        "format_version": FORMAT_VERSION,
        **card,
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "versions": card.get("versions") or library_versions(),
    }
    atomic_write_json(out / CARD_NAME, full_card)
    return out


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
    """A loaded model: preprocessing + network + class names. ``predict`` gives probabilities."""

    def __init__(self, module: torch.nn.Module, classes: Sequence[str], preprocessing: Preprocessing,
                 card: dict[str, Any] | None = None, model_dir: Path | None = None) -> None:
        self.module = module.eval()
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.card = card or {}
        self.model_dir = model_dir

    @property
    def architecture(self) -> str:
        return str(self.card.get("architecture", type(self.module).__name__))

    def load_images(self, images: Sequence[ImageSource]) -> list[Image.Image]:
        from image_classifier.data.decode import load_image

        size = self.preprocessing.input_size
        return [img if isinstance(img, Image.Image) else load_image(img, target_size=size) for img in images]

    def preprocess(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Decode (when given paths/bytes), resize and normalise into a (N, 3, H, W) float batch."""
        return self.preprocessing(self.load_images(images))

    @torch.inference_mode()
    def predict_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities for an already preprocessed batch."""
        logits = self.module(batch)
        return torch.softmax(logits.float(), dim=1).numpy()

    def predict(self, images: Sequence[ImageSource], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, shape (len(images), len(classes)), rows in ``self.classes`` order."""
        if isinstance(images, (str, os.PathLike, bytes, Image.Image)):
            raise TypeError("predict() takes a sequence of images; wrap a single image in a list")
        out = [self.predict_tensor(self.preprocess(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.empty((0, len(self.classes)), dtype=np.float32)

    def predict_labels(self, images: Sequence[ImageSource], batch_size: int = 32) -> list[str]:
        probs = self.predict(images, batch_size)
        return [self.classes[i] for i in probs.argmax(axis=1)]


def load_model(model_dir: str | os.PathLike, backend: str = "torch") -> Classifier:
    """Rebuild a saved model from its directory (architecture from the registry, weights from safetensors)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from image_classifier.models.registry import build_model

    model_dir = Path(model_dir)
    card = read_card(model_dir)
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
    module.eval().requires_grad_(False)
    return Classifier(module, card["classes"], Preprocessing.from_dict(card["preprocessing"]), card, model_dir)
