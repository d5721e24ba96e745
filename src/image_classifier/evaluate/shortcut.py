"""The shortcut audit: is a model reading the person, or the background, the kit, the colour?

Each test image is shown to a model three more times:

- ``face_masked``: every face the face pipeline found is covered by a grey box, enlarged beyond
  dlib's box (see :data:`SIDE_MARGIN`, :data:`TOP_MARGIN`, :data:`BOTTOM_MARGIN`), so hair,
  forehead, ears and chin go too;
- ``face_only``: everything *but* those enlarged boxes is grey;
- ``greyscale``: the picture's luma (ITU-R 601) in all three channels.

Images in which no face was found are left out of the first two (and counted). The faces are the
ones the face survey already found (:class:`~image_classifier.faces.FaceCache`, keyed by the file's
content): nothing is detected again. The fill is a fixed mid-grey, the ImageNet mean colour, not
the photo's own mean: a photo's mean colour carries its kit's colour (a red shirt makes it reddish)
into the masked area, which is exactly the shortcut the audit looks for; the ImageNet mean is also
what a pretrained network's normalisation maps to zero.

A variant is built once per image and model input (size, resize mode), already resized the way
the model's preprocessing would (the classifier's own resize is then a no-op, so its input is
identical to feeding the full-size variant) and shared by every model with that input: variants
stay small in memory, and each file is decoded once (through the run's
:class:`~image_classifier.evaluate.evaluation.DecodeCache`).

A ``face_embedding`` model answers a photo from a face's descriptor when one is like a known
person's, else from its fallback network. Its variants are given (``Model.shortcut_inputs``) as face inputs built from the
cached analysis: with the faces masked no face is left to find, so the fallback answers the masked
picture (informative: that is the face model without the face); with only the faces kept the
descriptors are those of the unchanged face pixels; in greyscale the descriptors are recomputed on
grey face chips at the cached landmarks (dlib's descriptor network sees colour).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from image_classifier.errors import UnreadableImageError
from image_classifier.evaluate.evaluation import DecodeCache, Evaluation, LabelledImage, label_indices
from image_classifier.faces.detect import MAX_DESCRIBED, FaceAnalysis, face_chip
from image_classifier.faces.dlib_weights import face_models
from image_classifier.inference.model import Model
from image_classifier.preprocessing import Preprocessing
from image_classifier.results import ShortcutAudit

log = logging.getLogger(__name__)

#: The variants, in the order the report shows them.
VARIANTS = ("face_masked", "face_only", "greyscale")
#: dlib's HOG box runs from the eyebrows to about the chin and from cheek to cheek: hair, forehead,
#: ears and often the chin lie outside it, and a model could still tell a person by the hair. The
#: box grows by this share of its width on each side (ears, hair at the sides) ...
SIDE_MARGIN = 0.25
#: ... by this share of its height above (forehead and hair) ...
TOP_MARGIN = 0.5
#: ... and by this share below (chin and jaw, not the collar: the kit must stay visible).
BOTTOM_MARGIN = 0.2
#: The fill: the ImageNet mean colour, a neutral mid-grey (see the module docstring).
FILL = (124, 116, 104)

Box = tuple[int, int, int, int]


def face_region(box: Sequence[float], width: int, height: int) -> Box:
    """The enlarged face box (x0, y0, x1, y1; x1, y1 exclusive) in whole pixels, inside the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    return (max(0, int(np.floor(x0 - SIDE_MARGIN * w))), max(0, int(np.floor(y0 - TOP_MARGIN * h))),
            min(width, int(np.ceil(x1 + SIDE_MARGIN * w))), min(height, int(np.ceil(y1 + BOTTOM_MARGIN * h))))


def face_regions(analysis: FaceAnalysis | None, width: int, height: int) -> list[Box]:
    """Every found face's enlarged box in the pixels of a ``width`` x ``height`` copy of the file
    (the analysis's boxes are in the file's own pixels). Every face, not only the largest: in a
    group photo the labelled person is not always the largest face."""
    if analysis is None or not analysis.faces:
        return []
    kx, ky = width / analysis.width, height / analysis.height
    return [face_region((f.box[0] * kx, f.box[1] * ky, f.box[2] * kx, f.box[3] * ky), width, height)
            for f in analysis.faces]


def _mask(image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
    """True inside any of ``boxes``."""
    inside = np.zeros((image.height, image.width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside[y0:y1, x0:x1] = True
    return inside


def mask_faces(image: Image.Image, boxes: Sequence[Box]) -> Image.Image:
    """``image`` with every box filled with :data:`FILL`."""
    arr = np.array(image.convert("RGB"))
    arr[_mask(image, boxes)] = FILL
    return Image.fromarray(arr)


def keep_faces(image: Image.Image, boxes: Sequence[Box]) -> Image.Image:
    """``image`` with everything outside the boxes filled with :data:`FILL`."""
    arr = np.array(image.convert("RGB"))
    arr[~_mask(image, boxes)] = FILL
    return Image.fromarray(arr)


def greyscale(image: Image.Image) -> Image.Image:
    """The luma of ``image`` (ITU-R 601, Pillow's "L") in three equal channels."""
    return image.convert("L").convert("RGB")


def make_variants(image: Image.Image, boxes: Sequence[Box]) -> dict[str, Image.Image | None]:
    """The three variants of one picture at its own size; the face ones None without a box."""
    return {"face_masked": mask_faces(image, boxes) if boxes else None,
            "face_only": keep_faces(image, boxes) if boxes else None,
            "greyscale": greyscale(image)}


def grey_descriptors(grey: Image.Image, analysis: FaceAnalysis) -> np.ndarray | None:
    """dlib's descriptors of the described faces of ``analysis`` (largest first), computed on the
    greyscale picture ``grey`` at the cached landmarks: no detection."""
    if not analysis.faces:
        return None
    kx, ky = grey.width / analysis.width, grey.height / analysis.height
    faces = [replace(f, box=(f.box[0] * kx, f.box[1] * ky, f.box[2] * kx, f.box[3] * ky),
                     landmarks=tuple((x * kx, y * ky) for x, y in f.landmarks))
             for f in analysis.faces[:MAX_DESCRIBED]]
    chips = [face_chip(grey, f) for f in faces]
    with face_models() as models:
        return np.asarray([models.descriptor.compute_face_descriptor(c) for c in chips], dtype=np.float32)


def example_strip(variants: Mapping[str, Image.Image | None], path: Path, *, height: int = 160,
                  gap: int = 6) -> Path:
    """One PNG of the three variants of one photo side by side (the report's example)."""
    shown = [variants[name] for name in VARIANTS if variants.get(name) is not None]
    scaled = [im.resize((max(1, round(im.width * height / im.height)), height), Image.Resampling.BILINEAR)
              for im in shown]
    strip = Image.new("RGB", (sum(im.width for im in scaled) + gap * (len(scaled) - 1), height), "white")
    x = 0
    for im in scaled:
        strip.paste(im, (x, 0))
        x += im.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path, format="PNG", optimize=True)
    return path


class AuditImages:
    """The variants of a run's test images, built once per image and model input, shared by models.

    ``analyses``: each test file's cached face analysis by ``rel_path`` (the face survey's; None
    when faces were not looked for, and then only greyscale is audited).
    """

    def __init__(self, analyses: Mapping[str, FaceAnalysis] | None, cache: DecodeCache | None = None) -> None:
        self.analyses = analyses
        self.cache = cache or DecodeCache()
        #: Each image's variants per model input, resized the way its preprocessing resizes (None: unreadable).
        self._entries: dict[tuple[str, int, str], dict[str, Image.Image | None] | None] = {}
        self._grey_desc: dict[str, np.ndarray | None] = {}
        #: One photo's full-size variants, kept for the report's example (the first with a face).
        self.example: dict[str, Image.Image | None] | None = None

    def analysis(self, rel_path: str) -> FaceAnalysis | None:
        return None if self.analyses is None else self.analyses.get(rel_path)

    def variants(self, item: LabelledImage, preprocessing: Preprocessing) -> dict[str, Image.Image | None] | None:
        """The variants of ``item`` ready for a model with ``preprocessing`` (None: unreadable)."""
        key = (item.rel_path, preprocessing.input_size, preprocessing.resize_mode)
        if key not in self._entries:
            self._entries[key] = self._build(item, preprocessing)
        return self._entries[key]

    def grey_descriptors(self, item: LabelledImage, size: int) -> np.ndarray | None:
        """The face descriptors of ``item``'s greyscale picture (``size`` px), computed once, when asked."""
        if item.rel_path not in self._grey_desc:
            self._grey_desc[item.rel_path] = self._describe_grey(item, size)
        return self._grey_desc[item.rel_path]

    def _describe_grey(self, item: LabelledImage, size: int) -> np.ndarray | None:
        analysis = self.analysis(item.rel_path)
        if analysis is None or not analysis.faces:
            return None
        return grey_descriptors(greyscale(self.cache.picture(item.path, size)), analysis)

    def _build(self, item: LabelledImage, preprocessing: Preprocessing) -> dict[str, Image.Image | None] | None:
        try:
            picture = self.cache.picture(item.path, preprocessing.input_size)
        except UnreadableImageError as err:
            log.info("shortcut audit: skipping %s: %s", item.rel_path, err.reason)
            return None
        full = make_variants(picture, face_regions(self.analysis(item.rel_path), picture.width, picture.height))
        if self.example is None and full["face_masked"] is not None:
            self.example = full
        return {k: None if v is None else preprocessing.resize(v) for k, v in full.items()}


def audit_classifier(classifier: Model, evaluation: Evaluation, images: AuditImages, *,
                     batch_size: int = 32) -> ShortcutAudit:
    """The shortcut audit of one loaded model on the images ``evaluation`` scored (its test split)."""
    started = time.perf_counter()
    classes = list(classifier.classes)
    preds = evaluation.predictions
    items = [LabelledImage(p.path, p.rel_path, p.true) for p in preds]
    y = label_indices(classes, items)
    prep = classifier.preprocessing
    built = [images.variants(it, prep) for it in items]
    correct: dict[str, float | None] = {}
    used: dict[str, int] = {}
    for name in VARIANTS:
        rows = [i for i, v in enumerate(built) if v is not None and v[name] is not None]
        used[name] = len(rows)
        if not rows:
            correct[name] = None
            continue
        inputs = classifier.shortcut_inputs(name, [built[i][name] for i in rows],  # type: ignore[index]
                                            [images.analysis(items[i].rel_path) for i in rows],
                                            lambda k: images.grey_descriptors(items[rows[k]], prep.input_size))
        probs = classifier.predict_proba(inputs, batch_size=batch_size)
        correct[name] = float(np.mean(probs.argmax(axis=1) == y[rows]))
    with_face = [i for i, v in enumerate(built) if v is not None and v["face_masked"] is not None]
    counts = Counter(p.true for p in preds)
    n = len(preds)
    return ShortcutAudit(
        images=n, accuracy=float(np.mean([p.correct for p in preds])) if preds else None,
        images_with_face=len(with_face),
        accuracy_with_face=float(np.mean([preds[i].correct for i in with_face])) if with_face else None,
        no_face=n - len(with_face),
        face_masked=correct["face_masked"], face_only=correct["face_only"], greyscale=correct["greyscale"],
        greyscale_images=used["greyscale"],
        chance_uniform=1.0 / len(classes), chance_majority=max(counts.values()) / n if n else 0.0,
        faces_looked_for=images.analyses is not None,
        seconds=time.perf_counter() - started,
    )
