"""The kinds of saved model and :func:`open_classifier`: which class a saved card opens as.

Each kind is a :class:`~image_classifier.inference.model.Model` class whose ``opens(card)`` says
whether a card is its own; the first in :data:`KINDS` that does opens it. (An ensemble's card lists
other saved models: :func:`image_classifier.inference.loading.load_model` opens it, each member through here.)
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from image_classifier.faces import FaceCache
from image_classifier.inference import CONCRETE_BACKENDS
from image_classifier.inference.backends import create_backend
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.face_model import FaceClassifier
from image_classifier.saved_model import load_module, read_card

#: Most particular first: the whole-image CNN opens any card no other kind claims.
KINDS: tuple[type[Classifier], ...] = (FaceClassifier, Classifier)


def open_classifier(model_dir: str | os.PathLike, backend: str = "torch", *, threads: int | None = None,
                    face_cache: FaceCache | None = None, backend_reason: str = "requested",
                    reject: bool = True, device: torch.device | None = None) -> Classifier:
    """Open a saved model (architecture from the registry, weights from safetensors) as its kind
    (:data:`KINDS`), with its forward pass on the concrete ``backend`` (one of
    :data:`~image_classifier.inference.CONCRETE_BACKENDS`).

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
    loader = functools.partial(load_module, model_dir, card)
    module = loader() if backend.startswith("torch") else None

    def network() -> torch.nn.Module:
        return module if module is not None else loader()

    kind = next(k for k in KINDS if k.opens(card))
    return kind.open(model_dir, card, module, network, face_cache, module_loader=loader, reject=reject,
                     backend=create_backend(backend, model_dir, card, network, threads=threads, device=device),
                     backend_reason=backend_reason)
