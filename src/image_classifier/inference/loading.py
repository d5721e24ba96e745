"""``load_model``: a saved model opened on the backend asked for, ``auto`` resolved first.

The top of the inference stack: ``auto`` is resolved by :mod:`image_classifier.inference.selection`
(the recorded choice, or a measurement that opens every candidate), then the model is opened on
that concrete backend (:func:`~image_classifier.inference.classifier.open_classifier`), reusing the
classifier the measurement already opened.

``device`` (``--device``): the torch backends run on it. On a GPU ``auto`` is eager PyTorch fp32
there, without measuring (the ONNX backends run on the CPU only, and no CPU backend is faster than
the GPU on a batch); on the CPU ``auto`` is the measured choice, as before.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from image_classifier.device import describe_device, is_cuda
from image_classifier.faces import FaceCache
from image_classifier.inference import BACKENDS
from image_classifier.inference.backends import backend_device
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.kinds import open_classifier
from image_classifier.inference.ensemble import is_ensemble_card, open_ensemble
from image_classifier.inference.model import Model
from image_classifier.inference.selection import choose_backend
from image_classifier.saved_model import read_card

log = logging.getLogger(__name__)


def load_model(model_dir: str | os.PathLike, backend: str = "auto", *, threads: int | None = None,
               remeasure: bool = False, face_cache: FaceCache | None = None, reject: bool = True,
               device: str | torch.device | None = "auto") -> Model:
    """Open a saved model directory with its forward pass on ``backend`` (one of :data:`BACKENDS`).

    ``backend="auto"`` (the default) runs the backend measured fastest for this model on this
    machine (measured on first use and recorded in ``backend.json``; ``remeasure=True`` measures
    again); the choice and its reason are logged and kept in ``classifier.backend_reason``.
    ``threads`` sets ONNX Runtime's intra-op threads (default: the process's PyTorch thread count).
    ``face_cache`` is where a face model looks up (and stores) each file's faces; by default, in memory.

    An ensemble's directory (``models/ensemble`` of a compare run) opens as an
    :class:`~image_classifier.inference.ensemble.EnsembleClassifier`: each member with a weight is
    loaded by this function on ``backend`` (``auto``: each on its own fastest backend).
    ``reject`` (default True): answer ``"unknown"`` for an image the model's rejection rule (fitted
    on validation, in the card) finds like none of its classes; False never does (``--no-reject``).
    ``device``: ``auto`` (default: the first CUDA GPU when PyTorch sees one, else the CPU), ``cpu``,
    ``cuda`` or ``cuda:N`` (or a :class:`torch.device`): where the torch backends compute. The
    probabilities come back as CPU numpy arrays on every device. ONNX backends run on the CPU:
    with them ``auto`` is the CPU and ``cuda`` an :class:`~image_classifier.errors.OptionError`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    where = backend_device(backend, device)  # a bad --device fails before any file is read
    card = read_card(model_dir)
    if is_ensemble_card(card):
        return open_ensemble(model_dir, card, lambda member: load_model(
            member, backend, threads=threads, remeasure=remeasure, face_cache=face_cache, device=where),
            reject=reject)
    if backend != "auto":
        return open_classifier(model_dir, backend, threads=threads, face_cache=face_cache, reject=reject,
                               device=where)
    if is_cuda(where):
        reason = (f"auto: PyTorch on the GPU ({where}: {describe_device(where).name}); "
                  "the ONNX backends run on the CPU only")
        log.info("%s: backend torch (%s)", model_dir, reason)
        return open_classifier(model_dir, "torch", threads=threads, face_cache=face_cache, backend_reason=reason,
                               reject=reject, device=where)
    model_dir = Path(model_dir)
    opened: dict[str, Classifier] = {}
    choice = choose_backend(model_dir, card, remeasure=remeasure, classifiers=opened,
                            threads=threads, face_cache=face_cache)
    log.info("%s: backend %s (auto: %s)", model_dir, choice.name, choice.reason)
    reason = f"auto: {choice.reason}"
    if choice.name in opened:  # just measured: keep the classifier the measurement opened
        chosen = opened[choice.name].chosen(reason)
        chosen.reject = reject
        return chosen
    return open_classifier(model_dir, choice.name, threads=threads, face_cache=face_cache, backend_reason=reason,
                           reject=reject)
