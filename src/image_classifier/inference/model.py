"""The ``Model`` protocol: what every kind of loaded model offers, so that callers never ask its kind.

Three kinds implement it: the whole-image CNN (:class:`~.classifier.Classifier`), the face model
(:class:`~.face_model.FaceClassifier`: faces first, the CNN as its no-face fallback) and the ensemble
(:class:`~.ensemble.EnsembleClassifier`). :mod:`.kinds` says which card opens as which class. Each
kind owns how it decodes and prepares an image, its forward pass, its temperatures, how its "none
of these" rule is fitted, its explanation, its shortcut-audit inputs and what timing it measures;
``study``, ``evaluate``, ``trust``, ``serve``, ``export``, ``people`` and ``sorting`` hold a ``Model``.
A new kind is one class with these methods and an entry in :data:`.kinds.KINDS`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np
from PIL import Image

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
        return len(self.rows) + len(self.direct)


@runtime_checkable
class Model(Protocol):
    """A loaded model of any kind (see the module docstring)."""

    classes: list[str]
    card: dict[str, Any]
    model_dir: Path | None
    preprocessing: Any  # image_classifier.preprocessing.Preprocessing
    backend: Any  # what computes: ``name`` and ``describe()``
    backend_reason: str
    reject: bool
    rejection_rule: Any  # inference.rejection.RejectionRule | None

    @property
    def name(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def backend_name(self) -> str: ...
    @property
    def device(self) -> Any: ...
    @property
    def decode_key(self) -> Any: ...
    @property
    def rejects(self) -> bool: ...
    @property
    def features_network(self) -> Any:
        """The network whose penultimate features characterise an image (leave-one-class-out), or None."""

    # -- input, forward pass, answers (the server's batcher runs the four steps itself)
    def decode(self, source: Any, *, max_pixels: int | None = None) -> Any: ...
    def decode_from(self, path: Path, cache: Any) -> Any: ...
    def prepare(self, images: Sequence[Any]) -> Any: ...
    def predict_tensor(self, batch: Any) -> np.ndarray: ...
    def finish(self, prepared: Any, forward: np.ndarray | None) -> np.ndarray: ...
    def judge(self, probabilities: np.ndarray, details: list[dict[str, Any]]) -> list[bool]: ...
    def forward_input(self, images: Sequence[Image.Image]) -> np.ndarray: ...
    def predict_details(self, images: Any, batch_size: int = 32, *, bgr: bool = False
                        ) -> tuple[np.ndarray, list[dict[str, Any]]]: ...
    def predict_proba(self, images: Any, batch_size: int = 32, *, bgr: bool = False) -> np.ndarray: ...
    def predict(self, images: Any, batch_size: int = 32, *, bgr: bool = False) -> list[str]: ...
    def predict_frame(self, images: Any, batch_size: int = 32, *, bgr: bool = False, faces: bool = False) -> Any: ...
    def with_keep(self, keep: float) -> Model: ...
    def tradeoff(self) -> dict[str, Any] | None: ...

    # -- calibration and "none of these"
    def temperatures(self, details: Sequence[dict[str, Any]] | None, n: int,
                     card: dict[str, Any] | None = None) -> np.ndarray: ...
    def uncalibrated(self, probs: np.ndarray, details: Sequence[dict[str, Any]] | None = None,
                     card: dict[str, Any] | None = None) -> np.ndarray: ...
    def fit_temperatures(self, logprobs: np.ndarray, labels: np.ndarray, details: Sequence[dict[str, Any]],
                         calibrate: Callable[[np.ndarray, np.ndarray], Any]) -> Any: ...
    def fit_rejection_rule(self, uncalibrated_probs: np.ndarray, details: Sequence[dict[str, Any]],
                           keep: float) -> Any: ...

    # -- why, shortcuts, timing
    def explain(self, image: Any, *, target: str | int | None = None, decoded: Any = None,
                max_side: int = 512) -> Any: ...
    def shortcut_inputs(self, variant: str, images: Sequence[Image.Image], analyses: Sequence[Any],
                        grey: Callable[[int], np.ndarray | None]) -> list[Any]: ...
    def for_timing(self) -> Model: ...
