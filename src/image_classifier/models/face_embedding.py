"""``face_embedding``: who is in the photo, from the face when there is one.

The network file holds two paths that share nothing but the classes:

* the **face path**: the faces found by :mod:`image_classifier.faces` → 5-point alignment → 150x150
  chip → dlib's 128-D descriptor. The face that decides is the largest one that looks like a person
  the model knows: within ``max_distance`` of the *bank*, the descriptors of the training faces.
  When no face is that close (a fan in the crowd, a partner beside the athlete, a stranger), no
  face decides and the fallback answers. Otherwise a linear head (standardised descriptor →
  logits) answers: alone for a face very like a training face (within ``alone_within``, the
  card's), together with the fallback for one further away (:func:`with_fallback`). dlib runs
  the descriptor; the head and the bank are buffers of this module, applied in numpy.
* the **fallback path**, for images where no face is found: ImageNet MobileNetV2 (frozen, at 320 px:
  see ``registry.FACE_FALLBACK_INPUT``) → GAP →
  the study's dense head, i.e. ``ClassifierNet.forward``. This is what the inference backends
  (PyTorch, ONNX Runtime) run and what ``export`` writes. Its pooled features also say how far the
  picture is from every training picture (:func:`picture_distances` to the *picture bank*, the
  training photos' features, a buffer of this module): a photo of no one (a landscape, a page, a
  pet) is far from all of them, however sure the dense head is of its answer.

:class:`FacePath` is the face half of a loaded model; :class:`FaceInput` is one image prepared
for it (its faces, and the decoded picture the fallback needs).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from image_classifier.data.decode import decode_image, read_source
from image_classifier.faces import (
    FaceAnalysis, FaceCache, analyse_bytes, analyse_image, describe_every_face, describe_rest,
)
from image_classifier.faces.detect import DESCRIPTOR_DIM
from image_classifier.models.net import ClassifierNet

#: The rejection score kind of a face nearest to a person added from a few photos by ``add``
#: (spelled as :mod:`image_classifier.inference.rejection` names it; this layer is below it).
ADDED_FACE_DISTANCE = "added_face_distance"
from image_classifier.models.transfer import mobilenet_v2


class FaceEmbeddingNet(ClassifierNet):
    """MobileNetV2 fallback (``forward``) plus the face head's buffers (fitted after training).

    ``face_bank_size`` is the number of training faces kept in the bank, ``picture_bank_size`` the
    number of training pictures (architecture options recorded in the card, so that a saved model
    is rebuilt with buffers of the right shape; 0 in models saved before the picture bank).
    """

    def __init__(self, fallback: ClassifierNet, num_classes: int, face_bank_size: int = 0,
                 picture_bank_size: int = 0) -> None:
        super().__init__(fallback.backbone, fallback.head, fallback.num_features)
        self.register_buffer("face_weight", torch.zeros(num_classes, DESCRIPTOR_DIM))
        self.register_buffer("face_bias", torch.zeros(num_classes))
        self.register_buffer("face_mean", torch.zeros(DESCRIPTOR_DIM))
        self.register_buffer("face_scale", torch.ones(DESCRIPTOR_DIM))
        self.register_buffer("face_bank", torch.zeros(face_bank_size, DESCRIPTOR_DIM))
        self.register_buffer("face_max_distance", torch.tensor(float("inf")))
        if picture_bank_size:  # a model saved before the picture bank has no such buffer, and still loads
            # The training pictures' pooled fallback features, each of unit length (see picture_distances).
            self.register_buffer("picture_bank", torch.zeros(picture_bank_size, fallback.num_features))


def face_embedding(num_classes: int, backbone_state: Any = None, face_bank_size: int = 0,
                   picture_bank_size: int = 0, **_: object) -> FaceEmbeddingNet:
    return FaceEmbeddingNet(mobilenet_v2(num_classes, backbone_state), num_classes, int(face_bank_size),
                            int(picture_bank_size))


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero)."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def picture_distances(features: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Cosine distance (1 - cosine similarity) from each picture's pooled fallback features (k, d) to
    the nearest row of ``bank`` (n, d, rows of unit length): how unlike every training picture the
    picture is. Measured on the athletes (MobileNetV2 at 320 px; split seeds 0-2): validation
    photos 0.24-0.25 at the 95th percentile, 0.30 at most; 18 pictures of no one (a cat, coffee,
    the moon, a page of text, a rocket, textures) 0.30 to 0.53."""
    if len(bank) == 0:
        return np.full(len(features), np.nan)
    return 1.0 - (unit_rows(features) @ np.asarray(bank, np.float64).T).max(axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def with_fallback(face: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The face head's and the fallback's probabilities (rows, uncalibrated) for photos whose
    deciding face is not very like a training face: their normalised product, the two read as
    independent evidence (the face, and the rest of the photo: kit, court, company). A face at
    0.5 from the training faces is right less often than one at 0.3, and the photo around it often
    says who it is; a face alone at that distance answered wrongly where the product did not."""
    logits = np.log(np.clip(np.asarray(face, np.float64), 1e-12, 1.0)) + \
        np.log(np.clip(np.asarray(fallback, np.float64), 1e-12, 1.0))
    return softmax(logits)


def face_answers(face: np.ndarray, distances: np.ndarray, fallback: np.ndarray, alone_within: float) -> np.ndarray:
    """Per photo a face decides: the face head's probabilities ``face`` where the face is within
    ``alone_within`` of the training faces (``distances``), else :func:`with_fallback` of them and the
    fallback's (``fallback``, the same rows). All uncalibrated: how training and the out-of-fold
    estimate score the model (a loaded model does the same in ``FaceClassifier.finish``)."""
    out = np.array(face, dtype=np.float64, copy=True)
    far = np.asarray(distances, dtype=np.float64) > alone_within
    if far.any():
        out[far] = with_fallback(out[far], np.asarray(fallback, np.float64)[far])
    return out


def nearest_distances(descriptors: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Euclidean distance from each descriptor (k, 128) to its nearest row of ``bank`` (n, 128)."""
    if len(bank) == 0:
        return np.full(len(descriptors), np.inf)
    d2 = (descriptors ** 2).sum(1)[:, None] - 2 * descriptors @ bank.T + (bank ** 2).sum(1)[None, :]
    return np.sqrt(np.clip(d2.min(1), 0, None))


@dataclass(frozen=True)
class FaceHead:
    """The linear head on standardised descriptors, ``softmax(((d - mean) / scale) @ weight.T + bias)``,
    and the rule that picks which face (if any) it answers for (see :meth:`choose`)."""

    weight: np.ndarray  # (C, 128)
    bias: np.ndarray  # (C,)
    mean: np.ndarray  # (128,)
    scale: np.ndarray  # (128,)
    bank: np.ndarray  # (n, 128): descriptors of the training faces
    max_distance: float  # a face further than this from every training face does not decide

    _NAMES = ("face_weight", "face_bias", "face_mean", "face_scale", "face_bank", "face_max_distance")

    @classmethod
    def from_module(cls, net: torch.nn.Module) -> FaceHead:
        values = [getattr(net, name).detach().cpu().numpy().astype(np.float64) for name in cls._NAMES]
        return cls(*values[:5], float(values[5]))

    def write_to(self, net: torch.nn.Module) -> None:
        for name, value in zip(self._NAMES, (self.weight, self.bias, self.mean, self.scale, self.bank,
                                             self.max_distance)):
            setattr(net, name, torch.as_tensor(np.asarray(value), dtype=torch.float32))

    def logits(self, descriptors: np.ndarray) -> np.ndarray:
        return ((np.asarray(descriptors, np.float64) - self.mean) / self.scale) @ self.weight.T + self.bias

    def probabilities(self, descriptors: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """``softmax(logits / temperature)``; a loaded model passes its card's ``face_temperature``."""
        return softmax(self.logits(descriptors) / float(temperature)).astype(np.float32)

    def choose(self, descriptors: np.ndarray | None) -> tuple[int | None, float | None]:
        """Which face decides, by this head's bank and ``max_distance``: see :func:`choose_face`."""
        return choose_face(descriptors, self.bank, self.max_distance)


def choose_face(descriptors: np.ndarray | None, bank: np.ndarray,
                max_distance: float) -> tuple[int | None, float | None]:
    """(index of the face that decides, its distance to the nearest training face): the largest
    face (descriptors come largest first) within ``max_distance`` of a row of ``bank``. The index is
    None when there is no face or none is that close; the distance is then the closest face's."""
    if descriptors is None or len(descriptors) == 0:
        return None, None
    dist = nearest_distances(np.asarray(descriptors, np.float64), bank)
    known = np.flatnonzero(dist <= max_distance)
    if len(known) == 0:
        return None, float(dist.min())
    return int(known[0]), float(dist[known[0]])


@dataclass
class FaceInput:
    """One image ready for a face model: what the face pipeline found, which face decides (None:
    no face, or none like a known person) and, when none does, the picture decoded at the
    fallback's input size."""

    analysis: FaceAnalysis
    image: Image.Image | None
    face_index: int | None = None
    distance: float | None = None  # to the nearest training face: the deciding face's, else the closest's
    #: The analysis with a descriptor for every face (a group photo with more faces than the
    #: largest ones described), for each face's own answer; None when ``analysis`` has them all.
    every: FaceAnalysis | None = None
    #: The file's SHA-256 ("" for an image given in memory): a photo whose own face is in the bank
    #: is measured against the others (see :meth:`FacePath.bank_for`).
    sha: str = ""

    @property
    def descriptor(self) -> np.ndarray | None:
        return None if self.face_index is None else self.analysis.descriptors[self.face_index]


class FacePath:
    """The face half of a loaded ``face_embedding`` model: decodes and analyses images and scores
    descriptors with the head. With a ``cache`` (``compare`` passes its disk cache, ``serve`` a
    bounded one in memory) a file whose content was analysed before costs nothing; without one
    (the default, and ``compare``'s timing) every image is analysed. ``temperature`` calibrates the
    head's probabilities (the card's ``face_temperature``; 1.0 uncalibrated)."""

    def __init__(self, head: FaceHead, input_size: int, cache: FaceCache | None = None, *,
                 temperature: float = 1.0, bank_labels: np.ndarray | None = None,
                 added: frozenset[int] = frozenset(), alone_within: float = float("inf"),
                 bank_sources: Sequence[str] | None = None, pictures: np.ndarray | None = None) -> None:
        self.head = head
        #: The training pictures' unit pooled features (:func:`picture_distances`; empty: none).
        self.pictures = np.empty((0, 0)) if pictures is None else np.asarray(pictures, np.float64)
        self.input_size = input_size
        self.cache = cache
        self.temperature = float(temperature)
        #: Whose face each bank row is (class index), when the card says (models trained since ``add``).
        self.bank_labels = None if bank_labels is None else np.asarray(bank_labels, dtype=np.int64)
        #: Classes added by ``add`` from a few photos: a face nearest to one of theirs is scored as
        #: ``added_face_distance`` (see :mod:`image_classifier.inference.enrol`).
        self.added = frozenset(added)
        #: A deciding face further than this from the training faces answers with the fallback
        #: (:func:`with_fallback`); inf (models trained before it): every face answers alone.
        self.alone_within = float(alone_within)
        #: Bank rows per source file's SHA-256 (the card's ``bank.sources``; rows added by ``add``
        #: have none): a validation photo's own face joined the bank after training.
        self._rows_of: dict[str, list[int]] = {}
        for row, sha in enumerate(bank_sources or ()):
            if sha:
                self._rows_of.setdefault(sha, []).append(row)

    def bank_for(self, sha: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(bank, whose face each row is) that a photo with this content is measured against: the
        bank without the photo's own face. The validation photos' faces join the bank once their
        choices are made (:mod:`image_classifier.training.face_head`); measured against itself, a
        validation photo would sit at distance 0 and every fit on validation (temperature, the
        "none of these" rule, the choice of model) would read a photo the model had learned."""
        rows = self._rows_of.get(sha) if sha else None
        if not rows:
            return self.head.bank, self.bank_labels
        keep = np.ones(len(self.head.bank), dtype=bool)
        keep[rows] = False
        return self.head.bank[keep], None if self.bank_labels is None else self.bank_labels[keep]

    def answers_with_fallback(self, item: FaceInput) -> bool:
        """Whether the photo's deciding face answers together with the fallback: it is further than
        ``alone_within`` from the training faces, and not nearest to a person added by ``add``
        (the fallback never learned them: see :mod:`image_classifier.inference.enrol`)."""
        return (item.face_index is not None and item.distance is not None and item.distance > self.alone_within
                and self.score_kind(item) is None)

    def nearest_added(self, descriptors: np.ndarray, sha: str = "") -> np.ndarray:
        """Per face (k, 128) of the photo with content ``sha``: whether its nearest training face is an added person's."""
        bank, labels = self.bank_for(sha)
        if not self.added or labels is None or len(descriptors) == 0:
            return np.zeros(len(descriptors), dtype=bool)
        d = np.asarray(descriptors, np.float64)
        d2 = (d ** 2).sum(1)[:, None] - 2 * d @ bank.T + (bank ** 2).sum(1)[None, :]
        return np.isin(labels[d2.argmin(1)], list(self.added))

    def score_kind(self, item: FaceInput) -> str | None:
        """The rejection score kind of the photo's face distance: ``added_face_distance`` when the
        face it is measured on (the deciding face, else the closest) is nearest to an added
        person's training face, else None (the usual ``face_distance``)."""
        descriptors = item.analysis.descriptors
        if not self.added or descriptors is None or len(descriptors) == 0:
            return None
        face = item.face_index if item.face_index is not None else self.closest(item)
        return ADDED_FACE_DISTANCE if bool(self.nearest_added(descriptors[face][None], item.sha)[0]) else None

    def closest(self, item: FaceInput) -> int | None:
        """The index of the photo's face nearest to a training face (None: no face described)."""
        descriptors = item.analysis.descriptors
        if descriptors is None or len(descriptors) == 0:
            return None
        return int(nearest_distances(np.asarray(descriptors, np.float64), self.bank_for(item.sha)[0]).argmin())

    def probabilities(self, descriptors: np.ndarray) -> np.ndarray:
        """The head's calibrated probabilities for deciding faces' descriptors (k, 128)."""
        return self.head.probabilities(descriptors, self.temperature)

    def decode(self, source: Any, *, max_pixels: int | None = None) -> FaceInput:
        """Analyse a path, bytes, stream or PIL image; decodes the fallback picture only when needed."""
        if isinstance(source, FaceInput):
            return source
        if isinstance(source, Image.Image):
            rgb = source if source.mode == "RGB" else source.convert("RGB")
            analysis = analyse_image(rgb)
            full = describe_rest(analysis, rgb)
            return FaceInput(analysis, rgb, *self.head.choose(analysis.descriptors),
                             every=None if full is analysis else full)
        data, path = read_source(source)
        sha = hashlib.sha256(data).hexdigest() if self.cache is not None or self._rows_of else ""
        if self.cache is None:
            analysis = analyse_bytes(data, path, max_pixels)
        else:
            analysis = self.cache.analyse_data(data, sha, path, max_pixels)
        # The photo's answer comes from the largest faces, as always; the others are described only
        # for their own answers (a group photo).
        index, distance = choose_face(analysis.descriptors, self.bank_for(sha)[0], self.head.max_distance)
        every = None
        if not analysis.every_face_described:
            every = (describe_every_face(analysis, data, path, max_pixels) if self.cache is None
                     else self.cache.every_face(analysis, data, sha, path, max_pixels))
        item = FaceInput(analysis, None, index, distance, every, sha)
        if index is None or self.answers_with_fallback(item):
            kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
            item.image = decode_image(data, path=path, target_size=self.input_size, **kwargs).image
        return item

    def details(self, item: FaceInput) -> dict[str, Any]:
        """``face``: the box of the face that decided (None: the whole-photo fallback did), with the
        detector step that found it, how many faces were found, and ``face_distance``: the deciding
        face's distance to the nearest training face (when none decided, the closest face's; dlib's
        usual same-person threshold is 0.6)."""
        face = None if item.face_index is None else item.analysis.faces[item.face_index]
        return {"face": None if face is None else [round(v, 1) for v in face.box],
                "face_method": None if face is None else face.method,
                "faces_found": len(item.analysis.faces),
                "face_distance": None if item.distance is None else round(item.distance, 4),
                "image_size": [item.analysis.width, item.analysis.height],
                "face_index": item.face_index,
                **({"face_score_kind": kind} if (kind := self.score_kind(item)) else {})}

    def every_face(self, item: FaceInput) -> list[dict[str, Any]]:
        """Every face found in the photo, largest first, each on its own: ``box``, ``method`` (the
        detector step), ``decided`` (the face that answered for the photo), and for a face with a
        descriptor its ``distance`` to the nearest training face (rounded as ``face_distance`` is)
        and ``probabilities``, the head's calibrated answer for that face alone (None without a
        descriptor, which every face found gets here: the largest
        :data:`~image_classifier.faces.detect.MAX_DESCRIBED` when the photo was analysed, the others
        by :func:`~image_classifier.faces.describe_every_face`)."""
        analysis = item.every if item.every is not None else item.analysis
        desc = analysis.descriptors if analysis.descriptors is not None else np.empty((0, DESCRIPTOR_DIM))
        desc = np.asarray(desc, np.float64)
        distances = nearest_distances(desc, self.bank_for(item.sha)[0]) if len(desc) else np.empty(0)
        probs = self.probabilities(desc) if len(desc) else None
        added = self.nearest_added(desc, item.sha)
        out = []
        for i, face in enumerate(analysis.faces):
            described = i < len(desc)
            out.append({"box": [round(v, 1) for v in face.box], "method": face.method,
                        "decided": i == item.face_index,
                        "distance": round(float(distances[i]), 4) if described else None,
                        "probabilities": probs[i] if described and probs is not None else None,
                        **({"score_kind": ADDED_FACE_DISTANCE} if described and added[i] else {})})
        return out


