"""Finding the faces in one photo, their 5 landmarks, and the 128-D descriptors of the largest.

The detector cascade, cheapest first, stops at the first step that finds a face:

1. ``hog``: dlib's HOG detector on a copy whose longer side is at most :data:`DETECT_MAX_SIDE`
   (a 24 MP photo is searched at 800x600: faces down to ~80 px there, ~250 px in the original).
2. ``hog-upsampled``: the same copy upsampled 2x (faces down to ~40 px): 3-4x the cost of step 1,
   so only when step 1 found nothing. On the athletes photos (612x408 web previews) step 1 finds a
   face in 64 % of the photos, step 2 in another 14 %.
3. ``hog-padded``: small images only (tight face crops, e.g. 112x112 aligned faces): HOG needs
   context around a face, so the crop is padded by replicating its border. Measured on 50 such
   crops: 45 found by step 2, 49 with padding.
4. ``cnn``: dlib's MMOD CNN detector, which also finds turned and tilted faces, on a copy bounded
   to :data:`CNN_MAX_SIDE` (about 0.5 s a photo, so it runs only when HOG found nothing; on the athletes photos HOG
   missed it found 3 of 32 at 400 px, 6 at 640 px for 2.4x the time).
5. ``whole-frame``: a small, roughly square image in which nothing was found, but where step 3 saw
   a face-like response too weak to count (see :data:`WEAK_THRESHOLD`), is taken to be a tight
   face crop: the landmark model is fitted on the whole frame. Without that evidence a small image
   (a 32x32 texture, an icon) has no face.

Faces are returned largest first, with boxes and landmarks in the pixels of the *original*
(EXIF-oriented) image. The descriptor is dlib's ResNet (99.38 % on LFW pairs) run on the
150x150 chip aligned by a face's 5 landmarks, for the :data:`MAX_DESCRIBED` largest faces (about
70 ms each): in a group photo the labelled person is often not the largest face.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from image_classifier.faces.dlib_weights import face_models, import_dlib

DETECT_MAX_SIDE = 800  # longer side of the copy the HOG detector searches
CNN_MAX_SIDE = 400  # longer side of the copy the CNN detector searches (its cost grows with area)
SMALL_SIDE = 256  # images no longer than this may be tight face crops (steps 3 and 5)
SQUARE_RATIO = 1.5  # ... when their sides differ by less than this ratio
#: Step 5 needs some evidence of a face: a HOG response on the padded crop above this (the detection
#: threshold is 0). Measured: 50 tight LFW crops scored -0.24 to 2.9; 30 synthetic textures and
#: shapes none above -1.0 but one (-0.98).
WEAK_THRESHOLD = -0.5
MIN_WHOLE_FRAME_SIDE = 40  # a smaller "face" carries too little for the 150x150 descriptor chip
CHIP_SIZE = 150  # dlib's descriptor network takes 150x150 aligned chips
CHIP_PADDING = 0.25  # dlib's default margin around the landmarks
DESCRIPTOR_DIM = 128
MAX_DESCRIBED = 5  # faces per image that get a descriptor, largest first
METHODS = ("hog", "hog-upsampled", "hog-padded", "cnn", "whole-frame")


@dataclass(frozen=True)
class Face:
    """One face: ``box`` (x0, y0, x1, y1) and 5 ``landmarks`` (x, y) in original-image pixels."""

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    method: str  # which step of the cascade found it (see METHODS)
    score: float  # the detector's confidence (HOG: SVM margin, CNN: its score; 0 for whole-frame)

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    def to_json(self) -> dict[str, Any]:
        return {"box": [round(v, 1) for v in self.box],
                "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
                "method": self.method, "score": round(self.score, 4)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Face:
        return cls(tuple(float(v) for v in data["box"]),  # type: ignore[arg-type]
                   tuple((float(x), float(y)) for x, y in data["landmarks"]),
                   str(data["method"]), float(data["score"]))


@dataclass
class FaceAnalysis:
    """What the face pipeline found in one image: its faces (largest first) and the descriptors of
    the first :data:`MAX_DESCRIBED` of them ((k, 128) float32; None when there is no face)."""

    width: int  # original, EXIF-oriented size
    height: int
    faces: list[Face] = field(default_factory=list)
    descriptors: np.ndarray | None = field(default=None, repr=False)

    @property
    def face(self) -> Face | None:
        """The largest face."""
        return self.faces[0] if self.faces else None

    @property
    def descriptor(self) -> np.ndarray | None:
        """The largest face's descriptor."""
        return None if self.descriptors is None else self.descriptors[0]

    @property
    def method(self) -> str | None:
        return self.faces[0].method if self.faces else None

    @property
    def every_face_described(self) -> bool:
        """Whether every face found has a descriptor (a group photo may have more than the largest few)."""
        return len(self.faces) <= (0 if self.descriptors is None else len(self.descriptors))

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "faces": [f.to_json() for f in self.faces],
                "descriptors": None if self.descriptors is None else self.descriptors.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaceAnalysis:
        desc = data.get("descriptors")
        return cls(int(data["width"]), int(data["height"]), [Face.from_json(f) for f in data["faces"]],
                   None if desc is None else np.asarray(desc, dtype=np.float32).reshape(-1, DESCRIPTOR_DIM))


def _bounded(image: Image.Image, max_side: int) -> tuple[np.ndarray, float]:
    """An RGB uint8 copy whose longer side is at most ``max_side``, and its scale to the original."""
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), scale


def _hog(models: Any, arr: np.ndarray, upsample: int, threshold: float = 0.0) -> list[tuple[Any, float]]:
    rects, scores, _ = models.hog.run(arr, upsample, threshold)
    return list(zip(rects, scores))


def _cnn(models: Any, arr: np.ndarray, upsample: int) -> list[tuple[Any, float]]:
    return [(d.rect, float(d.confidence)) for d in models.cnn(arr, upsample)]


def _is_small(width: int, height: int) -> bool:
    return max(width, height) <= SMALL_SIDE and max(width, height) / min(width, height) < SQUARE_RATIO


def _find(models: Any, image: Image.Image) -> tuple[np.ndarray, float, list[tuple[Any, float]], str]:
    """Run the cascade; returns (the HOG copy, its scale, [(rect in copy px, score)], method)."""
    dlib = import_dlib()
    arr, scale = _bounded(image, DETECT_MAX_SIDE)
    found = _hog(models, arr, 0)
    if found:
        return arr, scale, found, "hog"
    found = _hog(models, arr, 1)
    if found:
        return arr, scale, found, "hog-upsampled"
    small = _is_small(*image.size)
    weak = False  # a face-like HOG response too weak to count as a detection
    if small:
        pad = max(arr.shape[:2]) // 2
        padded = np.ascontiguousarray(np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
        hits = _hog(models, padded, 1, WEAK_THRESHOLD)
        found = [(dlib.rectangle(r.left() - pad, r.top() - pad, r.right() - pad, r.bottom() - pad), s)
                 for r, s in hits if s >= 0]
        if found:
            return arr, scale, found, "hog-padded"
        weak = bool(hits)
    small_arr, small_scale = _bounded(image, CNN_MAX_SIDE)
    found = _cnn(models, small_arr, 1 if max(small_arr.shape[:2]) <= SMALL_SIDE else 0)
    if found:
        k = scale / small_scale  # CNN copy px -> HOG copy px
        return arr, scale, [(dlib.rectangle(round(r.left() * k), round(r.top() * k), round(r.right() * k),
                                            round(r.bottom() * k)), s) for r, s in found], "cnn"
    if weak and min(arr.shape[:2]) >= MIN_WHOLE_FRAME_SIDE:
        h, w = arr.shape[:2]
        return arr, scale, [(dlib.rectangle(0, 0, w - 1, h - 1), 0.0)], "whole-frame"
    return arr, scale, [], ""


def analyse_image(image: Image.Image) -> FaceAnalysis:
    """Faces, landmarks and the largest faces' 128-D descriptors of one RGB image."""
    with face_models() as models:
        return _analyse(models, image)


def _analyse(models: Any, image: Image.Image) -> FaceAnalysis:
    arr, scale, found, method = _find(models, image)
    h, w = arr.shape[:2]
    to_orig = 1.0 / scale
    faces, shapes = [], []
    for rect, score in found:
        shape = models.landmarks(arr, rect)
        box = (max(0, rect.left()) * to_orig, max(0, rect.top()) * to_orig,
               min(w, rect.right() + 1) * to_orig, min(h, rect.bottom() + 1) * to_orig)
        points = tuple((p.x * to_orig, p.y * to_orig) for p in shape.parts())
        faces.append(Face(box, points, method, float(score)))
        shapes.append(shape)
    order = sorted(range(len(faces)), key=lambda i: -faces[i].area)
    faces = [faces[i] for i in order]
    desc = None
    if faces:
        dlib = import_dlib()
        chips = [dlib.get_face_chip(arr, shapes[i], CHIP_SIZE, CHIP_PADDING) for i in order[:MAX_DESCRIBED]]
        desc = np.asarray([models.descriptor.compute_face_descriptor(c) for c in chips], dtype=np.float32)
    return FaceAnalysis(image.width, image.height, faces, desc)


def face_chip(image: Image.Image, face: Face) -> np.ndarray:
    """The 150x150 RGB chip of ``face`` aligned by its landmarks (what the descriptor sees)."""
    dlib = import_dlib()
    arr, scale = _bounded(image, DETECT_MAX_SIDE)
    rect = dlib.rectangle(*(round(v * scale) for v in face.box))
    parts = dlib.points([dlib.point(round(x * scale), round(y * scale)) for x, y in face.landmarks])
    shape = dlib.full_object_detection(rect, parts)
    return np.asarray(dlib.get_face_chip(arr, shape, CHIP_SIZE, CHIP_PADDING))


def describe(image: Image.Image, faces: list[Face]) -> np.ndarray:
    """The 128-D descriptors of ``faces`` (boxes and landmarks in ``image``'s pixels), from their
    aligned chips (:func:`face_chip`): the same descriptor :func:`analyse_image` computes for the
    :data:`MAX_DESCRIBED` largest, for any face, e.g. every face of a group photo."""
    if not faces:
        return np.empty((0, DESCRIPTOR_DIM), dtype=np.float32)
    with face_models() as models:
        return np.asarray([models.descriptor.compute_face_descriptor(face_chip(image, f)) for f in faces],
                          dtype=np.float32)


def describe_rest(analysis: FaceAnalysis, image: Image.Image, scale: float = 1.0) -> FaceAnalysis:
    """``analysis`` with the faces past the described ones (a group photo's) described too, from
    ``image``, whose pixels are ``scale`` of the analysis's (file pixels per image pixel); itself when
    every face has a descriptor already."""
    if analysis.every_face_described:
        return analysis
    first = analysis.descriptors if analysis.descriptors is not None else np.empty((0, DESCRIPTOR_DIM), np.float32)
    rest = [replace(f, box=tuple(v / scale for v in f.box),
                    landmarks=tuple((x / scale, y / scale) for x, y in f.landmarks))
            for f in analysis.faces[len(first):]]
    return FaceAnalysis(analysis.width, analysis.height, analysis.faces,
                        np.concatenate([first, describe(image, rest)]).astype(np.float32))
