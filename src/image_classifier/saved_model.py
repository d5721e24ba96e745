"""A saved model on disk: a directory with ``weights.safetensors`` and a JSON card (``model.json``).

The card holds everything needed to rebuild and feed the network on another machine: the
architecture and its builder options, the class names in order, the preprocessing, plus the
provenance (recipe, CLI args, history, best validation metrics, split hash, versions, time).
Weights are safetensors, so loading a model never runs pickled code.

Writes are atomic: each file is written under a temporary name and renamed, the card last, and
the card records the weights' sha256, so a directory caught mid-write is detected, never loaded.

This module is the bottom of the inference stack: it reads and writes the files (names from
:mod:`image_classifier.runs`) and rebuilds the PyTorch network; running it is
:mod:`image_classifier.inference`'s job (``image_classifier.load_model``).
"""
from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from image_classifier.card import FORMAT_VERSION, ModelCard, read_card, write_card
from image_classifier.errors import ModelFormatError
from image_classifier.models.registry import build_model
from image_classifier.runs import NEXT_WEIGHTS_NAME, WEIGHTS_NAME
from image_classifier.tensorio import safetensors_sha256, write_safetensors
from image_classifier.version import __version__

__all__ = ["FORMAT_VERSION", "ModelCard", "library_versions", "load_module", "read_card", "save_model", "write_card"]


def library_versions() -> dict[str, str]:
    """The versions a model was trained with, recorded in its card."""
    return {
        "image_classifier": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def save_model(module: torch.nn.Module | Mapping[str, torch.Tensor], card: ModelCard | dict[str, Any],
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
    fields = card.to_json() if isinstance(card, ModelCard) else card
    for key in ("architecture", "classes", "preprocessing"):
        if key not in fields:
            raise ValueError(f"model card needs {key!r}")
    out = Path(out_dir)
    items = module.items() if isinstance(module, Mapping) else module.state_dict().items()
    state = {k: v.detach() for k, v in items}
    meta = {"format": "pt"}
    sha = safetensors_sha256(state, meta)
    current = _current_weights(out)  # (file name, sha256) the existing card points at, if valid

    def write(name: str) -> None:
        write_card(out, ModelCard.from_json({"format_version": FORMAT_VERSION, **fields, "weights_file": name,
                                             "weights_sha256": sha,
                                             "versions": fields.get("versions") or library_versions()}))

    if current is not None and current[1] == sha and (current[0] == WEIGHTS_NAME or not stable_name):
        name = current[0]
    else:
        name = WEIGHTS_NAME if current is None or current[0] != WEIGHTS_NAME else NEXT_WEIGHTS_NAME
        write_safetensors(out / name, state, meta)
    write(name)
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
        write(WEIGHTS_NAME)
        name = WEIGHTS_NAME
    for stale in (WEIGHTS_NAME, NEXT_WEIGHTS_NAME):
        if stale != name:
            (out / stale).unlink(missing_ok=True)
    return out


def _current_weights(out: Path) -> tuple[str, str] | None:
    """The (weights file, sha256) of the card in ``out`` when both exist, else None."""
    try:
        card = read_card(out)
    except ModelFormatError:
        return None
    name, sha = str(card.weights_file), str(card.weights_sha256)
    return (name, sha) if name in (WEIGHTS_NAME, NEXT_WEIGHTS_NAME) and (out / name).is_file() else None


def load_module(model_dir: str | os.PathLike, card: ModelCard) -> torch.nn.Module:
    """The PyTorch network of a saved model (in eval mode, frozen), its weights checked against
    the card's sha256."""
    model_dir = Path(model_dir)
    weights_path = model_dir / (card.weights_file or WEIGHTS_NAME)
    try:
        blob = weights_path.read_bytes()
    except OSError as err:
        raise ModelFormatError(f"cannot read the weights of {model_dir}: {err}") from err
    expected = card.weights_sha256
    if expected and hashlib.sha256(blob).hexdigest() != expected:
        raise ModelFormatError(f"{weights_path} does not match its card (changed or half-written); retrain or restore it")
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError) as err:
        raise ModelFormatError(f"{weights_path} is not a valid safetensors file: {err}") from err
    try:
        module, _ = build_model(card.architecture, len(card.classes), options=card.arch_options or {})
    except KeyError as err:
        raise ModelFormatError(f"{model_dir}: {err.args[0]}") from err
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFormatError(f"{weights_path} does not fit architecture {card.architecture}: {err}") from err
    return module.eval().requires_grad_(False)
