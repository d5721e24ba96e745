"""``face_embedding``: who is in the photo, from the face when there is one.

The network file holds two paths that share nothing but the classes:

* the **face path**: the largest face (found by :mod:`image_classifier.faces`) → 5-point alignment
  → 150x150 chip → dlib's 128-D descriptor → a linear head (standardised descriptor → logits).
  dlib runs the descriptor; the head is four buffers of this module, applied in numpy.
* the **fallback path**, for images where no face is found: ImageNet MobileNetV2 (frozen) → GAP →
  the study's dense head, i.e. ``ClassifierNet.forward``. This is what the inference backends
  (PyTorch, ONNX Runtime) run and what ``export`` writes.

:class:`FacePath` is the face half of a loaded model; :class:`FaceInput` is one image prepared
for it (its faces, and the decoded picture the fallback needs).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from image_classifier.faces import FaceAnalysis, FaceCache, analyse_bytes, analyse_image
from image_classifier.faces.detect import DESCRIPTOR_DIM
from image_classifier.models import transfer
from image_classifier.models.net import ClassifierNet


class FaceEmbeddingNet(ClassifierNet):
    """MobileNetV2 fallback (``forward``) plus the face head's buffers (fitted after training)."""

    def __init__(self, fallback: ClassifierNet, num_classes: int) -> None:
        super().__init__(fallback.backbone, fallback.head, fallback.num_features)
        self.register_buffer("face_weight", torch.zeros(num_classes, DESCRIPTOR_DIM))
        self.register_buffer("face_bias", torch.zeros(num_classes))
        self.register_buffer("face_mean", torch.zeros(DESCRIPTOR_DIM))
        self.register_buffer("face_scale", torch.ones(DESCRIPTOR_DIM))


def face_embedding(num_classes: int, backbone_state: Any = None, **_: object) -> FaceEmbeddingNet:
    return FaceEmbeddingNet(transfer.mobilenet_v2(num_classes, backbone_state), num_classes)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class FaceHead:
    """The linear head on standardised descriptors: ``softmax(((d - mean) / scale) @ weight.T + bias)``."""

    weight: np.ndarray  # (C, 128)
    bias: np.ndarray  # (C,)
    mean: np.ndarray  # (128,)
    scale: np.ndarray  # (128,)

    @classmethod
    def from_module(cls, net: torch.nn.Module) -> FaceHead:
        get = lambda name: getattr(net, name).detach().cpu().numpy().astype(np.float64)  # noqa: E731
        return cls(get("face_weight"), get("face_bias"), get("face_mean"), get("face_scale"))

    def write_to(self, net: torch.nn.Module) -> None:
        for name, value in (("face_weight", self.weight), ("face_bias", self.bias), ("face_mean", self.mean),
                            ("face_scale", self.scale)):
            getattr(net, name).copy_(torch.as_tensor(value, dtype=torch.float32))

    def logits(self, descriptors: np.ndarray) -> np.ndarray:
        return ((np.asarray(descriptors, np.float64) - self.mean) / self.scale) @ self.weight.T + self.bias

    def probabilities(self, descriptors: np.ndarray) -> np.ndarray:
        return softmax(self.logits(descriptors)).astype(np.float32)


@dataclass
class FaceInput:
    """One image ready for a face model: what the face pipeline found, and (when no face was found)
    the picture decoded at the fallback's input size."""

    analysis: FaceAnalysis
    image: Image.Image | None


class FacePath:
    """The face half of a loaded ``face_embedding`` model: decodes and analyses images and scores
    descriptors with the head. With a ``cache`` (``compare`` and ``evaluate`` pass theirs) a file whose
    content was analysed before costs nothing; without one every image is analysed, as a
    server's uploads and a timing must be."""

    def __init__(self, head: FaceHead, input_size: int, cache: FaceCache | None = None) -> None:
        self.head = head
        self.input_size = input_size
        self.cache = cache

    def decode(self, source: Any, *, max_pixels: int | None = None) -> FaceInput:
        """Analyse a path, bytes, stream or PIL image; decodes the fallback picture only when needed."""
        from image_classifier.data.decode import decode_image, read_source

        if isinstance(source, FaceInput):
            return source
        if isinstance(source, Image.Image):
            rgb = source if source.mode == "RGB" else source.convert("RGB")
            return FaceInput(analyse_image(rgb), rgb)
        data, path = read_source(source)
        if self.cache is None:
            analysis = analyse_bytes(data, path, max_pixels)
        else:
            analysis = self.cache.analyse_data(data, hashlib.sha256(data).hexdigest(), path, max_pixels)
        image = None
        if analysis.face is None:
            kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
            image = decode_image(data, path=path, target_size=self.input_size, **kwargs).image
        return FaceInput(analysis, image)

    def details(self, item: FaceInput) -> dict[str, Any]:
        face = item.analysis.face
        return {"face": None if face is None else [round(v, 1) for v in face.box],
                "face_method": None if face is None else face.method,
                "faces_found": len(item.analysis.faces),
                "image_size": [item.analysis.width, item.analysis.height]}


