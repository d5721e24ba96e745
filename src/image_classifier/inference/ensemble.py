"""A saved ensemble: a model directory whose card lists other saved models and their weights, and
:class:`EnsembleClassifier`, which answers like a :class:`~image_classifier.inference.classifier.Classifier`.

The card (``model.json``) has ``architecture: "ensemble"``, the classes, and under ``ensemble``
each candidate model by its path *relative to the ensemble's directory* (so the run directory
can be moved or copied), its weight and the SHA-256 of what it predicts with (its weights and the
prediction-relevant part of its card: :func:`member_fingerprint`). A member with weight 0 is
listed (the report names it) but never opened. Each member keeps its own preprocessing, face
path and backend; an image is decoded once per distinct :attr:`Classifier.decode_key` among the
members, and the probabilities are the weighted average of the members' (calibrated, where the
members are).

Two ways of combining the members (the card's ``ensemble.combine``): ``mean`` (the default), the
weighted average above; ``face_first``, a cascade of a face model and one whole-image model: the
face model answers where a face like a known person's decides, the other model everywhere else
(its forward pass runs only for those images; the face model's fallback runs only where its face
answers together with it), and the
members' weights are only the share of validation images each answered.

For the server's batcher the ensemble looks like one network: :meth:`EnsembleClassifier.prepare`
packs, per image, a flag per member (does this member's forward pass need to run?) and every
member's input into one flat row; :meth:`EnsembleClassifier.predict_tensor` unpacks a batch of
such rows and runs each member's forward pass on its own backend; :meth:`EnsembleClassifier.finish`
hands each member its part so that members finish (face answers, calibration) as they always do.

"None of these": :meth:`EnsembleClassifier.finish` also scores each image as its strangest member
finds it: the smallest, over the members that have a rejection rule, of the member's own conformal
p-value (``details['member_p_value']``); for a cascade, the face model's p-value (a stranger's face is
far from its bank whichever member answers; a photo without a face is never rejected: the face
model's picture distance comes from its own fallback's forward pass, which a cascade does not run
where no face decides). The ensemble's own rule (card key ``rejection``, fitted
by ``compare`` on the validation split) thresholds that score; an ensemble card without one (older
runs) never answers "unknown".
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from image_classifier.errors import ModelFormatError
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.explain import Explanation
from image_classifier.inference.face_model import FaceClassifier
from image_classifier.inference.model import ImageSource, Model, Prepared
from image_classifier.inference.rejection import (
    MEMBER_P_VALUE, RejectionRule, annotate, fit_ensemble_rule, member_p_values,
)
from image_classifier.preprocessing import Preprocessing
from image_classifier.runs import CARD_NAME
from image_classifier.jsonable import to_json
from image_classifier.saved_model import FORMAT_VERSION, ModelCard, read_card, write_card

#: ``architecture`` of an ensemble's card.
ENSEMBLE_ARCH = "ensemble"
#: How the members' answers combine (the card's ``ensemble.combine``; see the module docstring).
MEAN, FACE_FIRST = "mean", "face_first"
COMBINE = (MEAN, FACE_FIRST)
#: The card keys that decide what a member predicts: a change to any of them changes its probabilities.
FINGERPRINT_KEYS = ("architecture", "arch_options", "classes", "preprocessing", "weights_sha256", "calibration",
                    "faces")


def is_ensemble_card(card: ModelCard) -> bool:
    return card.architecture == ENSEMBLE_ARCH


def is_cascade(cards: Sequence[ModelCard]) -> bool:
    """Whether these members (in order) can make a face-first cascade: a face model, then a model of another kind."""
    return len(cards) == 2 and FaceClassifier.opens(cards[0]) and not FaceClassifier.opens(cards[1])


def member_fingerprint(card: ModelCard) -> str:
    """SHA-256 of what a member predicts with: its weights' hash and the card keys that shape its
    probabilities (:data:`FINGERPRINT_KEYS`). Re-exporting a member or re-measuring its backends
    rewrites other parts of its card and leaves this unchanged; retraining or recalibrating changes it."""
    core = {k: to_json(getattr(card, k)) for k in FINGERPRINT_KEYS}
    return hashlib.sha256(json.dumps(core, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class MemberSpec:
    """One candidate model of a saved ensemble, as its card lists it."""

    name: str
    path: str  # relative to the ensemble's directory
    weight: float
    sha256: str  # member_fingerprint of its card
    weights_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "weight": self.weight, "sha256": self.sha256,
                "weights_sha256": self.weights_sha256}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MemberSpec:
        return cls(str(d["name"]), str(d["path"]), float(d["weight"]), str(d["sha256"]), d.get("weights_sha256"))


def write_ensemble(out_dir: str | os.PathLike, members: dict[str, Path], weights: dict[str, float], *,
                   extra: dict[str, Any] | None = None, best: dict[str, Any] | None = None,
                   combine: str = MEAN) -> Path:
    """Save an ensemble of the saved models ``members`` (``{name: model dir}``) with ``weights``
    (summing to 1; a name without a weight gets 0) into ``out_dir``; returns the directory.

    ``extra`` is stored under the card's ``ensemble`` key beside the members (how it was chosen);
    ``best`` is the card's ``best`` (``val_accuracy``, ``val_loss``: what ``evaluate`` reports as its
    validation figures, as for a trained model). ``combine``: :data:`MEAN` or :data:`FACE_FIRST`
    (then exactly two members with a weight: a face model first, and a whole-image model)."""
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {', '.join(COMBINE)}, not {combine!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs, cards = [], {}
    for name, path in members.items():
        card = read_card(path)
        cards[name] = card
        rel = os.path.relpath(Path(path).resolve(), out.resolve())
        specs.append(MemberSpec(name, Path(rel).as_posix(), float(weights.get(name, 0.0)), member_fingerprint(card),
                                card.weights_sha256))
    chosen = [s for s in specs if s.weight > 0]
    if not chosen:
        raise ValueError("an ensemble needs a member with a weight above 0")
    total = sum(s.weight for s in chosen)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"ensemble weights must sum to 1, not {total}")
    classes = list(cards[chosen[0].name].classes)
    differing = [s.name for s in chosen if list(cards[s.name].classes) != classes]
    if differing:
        raise ModelFormatError(f"{', '.join(differing)} have other classes than {chosen[0].name}: an ensemble's "
                               "members must be trained on the same classes, in the same order")
    if combine == FACE_FIRST and not is_cascade([cards[s.name] for s in chosen]):
        raise ValueError("a face-first cascade has two members: a face model first, then a whole-image model")
    # Informative only (each member uses its own card's): the largest input, which a warm-up picture needs.
    largest = max(chosen, key=lambda s: int(cards[s.name].preprocessing["input_size"]))
    card = ModelCard(format_version=FORMAT_VERSION, architecture=ENSEMBLE_ARCH, classes=classes,
                     preprocessing=dict(cards[largest.name].preprocessing),
                     ensemble={**(extra or {}), "combine": combine, "members": [s.to_json() for s in specs]})
    if best is not None:
        card.best = dict(best)
    write_card(out, card)
    return out


def ensemble_members(model_dir: str | os.PathLike, card: ModelCard | None = None) -> list[MemberSpec]:
    """The members the card of the ensemble in ``model_dir`` lists (every candidate, weight 0 included)."""
    card = card if card is not None else read_card(model_dir)
    try:
        return [MemberSpec.from_json(d) for d in card.ensemble_member_entries]
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFormatError(f"{Path(model_dir) / CARD_NAME} is not a valid ensemble card ({err!r})") from err


def check_member(model_dir: Path, spec: MemberSpec) -> Path:
    """The member's directory, after checking it is the model the ensemble was chosen with."""
    path = (Path(model_dir) / spec.path).resolve()
    if not (path / CARD_NAME).is_file():
        raise ModelFormatError(
            f"{model_dir}: member {spec.name} ({spec.path}) is missing ({path / CARD_NAME} not found); keep the "
            "ensemble inside its run directory (move or copy the whole run), or re-run `image-classifier compare`")
    found = member_fingerprint(read_card(path))
    if found != spec.sha256:
        raise ModelFormatError(
            f"{model_dir}: member {spec.name} ({path}) has changed since the ensemble was chosen (SHA-256 "
            f"{found[:12]}... instead of {spec.sha256[:12]}...): its weights were chosen for the old model; re-run "
            "`image-classifier compare` to choose them again")
    return path


@dataclass
class EnsembleInput:
    """One image decoded for an ensemble: once per distinct decode key of its members."""

    by_key: dict[Any, Any]


@dataclass
class EnsemblePrepared:
    """Images made ready for :meth:`EnsembleClassifier.predict_tensor` (what the batcher moves)."""

    batch: np.ndarray  # (len(rows), members + sum of inputs) float32: flags, then each member's input
    rows: list[int]  # images for which some member's forward pass runs
    parts: list[Prepared]  # each member's own preparation
    details: list[dict[str, Any]]
    n: int

    @property
    def size(self) -> int:
        return self.n


class EnsembleBackend:
    """What ``backend_name`` / ``backend.describe()`` say about an ensemble: its members' backends."""

    def __init__(self, members: Sequence[tuple[str, Classifier, float]]) -> None:
        self.members = members
        self.name = "ensemble(" + "+".join(sorted({c.backend_name for _, c, _ in members})) + ")"

    def describe(self) -> str:
        return "; ".join(f"{n} ({w:.2f}): {c.backend.describe()}" for n, c, w in self.members)


class EnsembleClassifier(Model):
    """The weighted average of several loaded classifiers, with :class:`Classifier`'s interface
    (``predict``, ``predict_proba``, ``predict_details``, ``decode``, ``prepare``, ``predict_tensor``,
    ``finish``): a :class:`~image_classifier.inference.model.Model`, so ``predict``, ``evaluate`` and
    ``serve`` use it unchanged."""

    def __init__(self, members: Sequence[tuple[str, Classifier, float]], card: ModelCard,
                 model_dir: Path | None = None, backend_reason: str = "", reject: bool = True) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.card = card
        #: Whether :meth:`predict` answers "unknown" for an image the ensemble's rule rejects.
        self.reject = reject
        self.model_dir = model_dir
        self.classes = list(card.classes)
        for name, clf, _ in self.members:
            if list(clf.classes) != self.classes:
                raise ModelFormatError(f"{model_dir}: member {name} has classes {clf.classes}, the ensemble {self.classes}")
        self.combine = str(card.ensemble_combine or MEAN)
        if self.combine == FACE_FIRST and not is_cascade([clf.card for _, clf, _ in self.members]):
            raise ModelFormatError(f"{model_dir}: a face-first cascade needs a face model and then a whole-image model")
        self.preprocessing = Preprocessing.from_dict(card.preprocessing)
        self.backend = EnsembleBackend(self.members)
        self.backend_reason = backend_reason or "each member on its own backend"
        # One member per decode key decodes for all the members sharing it.
        self._decoders: dict[Any, Classifier] = {}
        for _, clf, _ in self.members:
            self._decoders.setdefault(clf.decode_key, clf)
        self._shapes = [(3, clf.preprocessing.input_size, clf.preprocessing.input_size) for _, clf, _ in self.members]
        self._widths = [int(np.prod(s)) for s in self._shapes]

    @property
    def card(self) -> ModelCard:
        return self._card

    @card.setter
    def card(self, value: ModelCard) -> None:
        # The rule follows the card (compare stores a freshly fitted one into a loaded ensemble).
        self._card = value
        self.rejection_rule: RejectionRule | None = RejectionRule.from_card(value.rejection)

    def temperatures(self, details: Sequence[dict[str, Any]] | None, n: int,
                     card: ModelCard | None = None) -> np.ndarray:
        """Ones: the members' probabilities come calibrated, the ensemble adds no temperature."""
        return np.ones(n)

    def fit_temperatures(self, logprobs: np.ndarray, labels: np.ndarray, details: Sequence[dict[str, Any]],
                         calibrate: Any) -> tuple[dict[str, Any], np.ndarray, list[str], dict[str, Any]]:
        """None: an ensemble is the mix of calibrated members."""
        return {"temperature": 1.0}, np.ones(len(labels)), [], {}

    def fit_rejection_rule(self, uncalibrated_probs: np.ndarray, details: Sequence[dict[str, Any]],
                           keep: float) -> RejectionRule:
        """On the members' p-values (``member_p_value``): see :func:`~.rejection.fit_ensemble_rule`."""
        return fit_ensemble_rule(details, keep)

    @property
    def features_network(self) -> None:
        """None: an ensemble's images are characterised by its members."""
        return None

    def explain(self, image: ImageSource, *, target: str | int | None = None, decoded: Any = None,
                max_side: int = 512) -> Explanation:
        """The explanation of the member that weighs most (the face model's, for a cascade)."""
        index = 0 if self.combine == FACE_FIRST else int(np.argmax([w for _, _, w in self.members]))
        member = self.members[index][1]
        part = decoded.by_key[member.decode_key] if isinstance(decoded, EnsembleInput) else None
        return member.explain(image, target=target, decoded=part, max_side=max_side)

    def shortcut_inputs(self, variant: str, images: Sequence[Image.Image], analyses: Sequence[Any],
                        grey: Callable[[int], np.ndarray | None]) -> list[Any]:
        """Each picture decoded once per member kind, as each member audits it."""
        return [EnsembleInput({clf.decode_key: clf.shortcut_inputs(variant, [image], [analysis], lambda _: grey(k))[0]
                               for clf in self._decoders.values()})
                for k, (image, analysis) in enumerate(zip(images, analyses))]

    def networks(self) -> list[Any]:
        return [clf for _, clf, _ in self.members]

    def for_timing(self) -> Model:
        for _, clf, _ in self.members:
            clf.for_timing()
        return self

    @property
    def forward_is_whole(self) -> bool:
        """Whether every member's forward pass is all that member computes (a face member's is not)."""
        return all(clf.forward_is_whole for _, clf, _ in self.members)

    @property
    def device(self) -> torch.device:
        """Where the members compute: the GPU when one of them runs there, else the CPU."""
        devices = [clf.device for _, clf, _ in self.members]
        return next((d for d in devices if d.type == "cuda"), devices[0])

    @property
    def arch(self) -> str:
        return ENSEMBLE_ARCH

    @property
    def weights(self) -> dict[str, float]:
        return {n: w for n, _, w in self.members}

    @property
    def decode_key(self) -> tuple[Any, ...]:
        return (ENSEMBLE_ARCH, *sorted(self._decoders, key=repr))

    # -- decoding ----------------------------------------------------------------------------------
    def decode(self, source: ImageSource | EnsembleInput, *, max_pixels: int | None = None) -> EnsembleInput:
        """One image decoded once per distinct decode key of the members."""
        if isinstance(source, EnsembleInput):
            return source
        if hasattr(source, "read") and not isinstance(source, (str, os.PathLike, bytes, Image.Image)):
            source = source.read()  # a stream can be read once; bytes can be decoded many times
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        return EnsembleInput({key: clf.decode(source, **kwargs) for key, clf in self._decoders.items()})

    def decode_from(self, path: Path, cache: Any) -> EnsembleInput:
        """Like :meth:`decode`, taking each member's decoding from ``cache`` (an
        :class:`~image_classifier.evaluate.evaluation.DecodeCache`), where the members' own
        evaluations already put it."""
        return EnsembleInput({key: cache.get(path, clf) for key, clf in self._decoders.items()})

    # -- the batcher's three steps -----------------------------------------------------------------
    def prepare(self, images: Sequence[Any]) -> EnsemblePrepared:
        items = [self.decode(img) for img in images]
        n = len(items)
        parts = [clf.prepare([it.by_key[clf.decode_key] for it in items]) for _, clf, _ in self.members]
        if self.combine == FACE_FIRST:
            parts = _face_first_parts(parts)
        k = len(self.members)
        rows = sorted({i for p in parts for i in p.rows})
        position = {i: r for r, i in enumerate(rows)}
        batch = np.zeros((len(rows), k + sum(self._widths)), dtype=np.float32)
        offset = k
        for m, (part, width) in enumerate(zip(parts, self._widths)):
            if part.rows:
                at = [position[i] for i in part.rows]
                batch[at, m] = 1.0
                batch[at, offset:offset + width] = part.batch.reshape(len(part.rows), width)
            offset += width
        details = [{"members": [{"name": name, "weight": w, **part.details[i]}
                                for (name, _, w), part in zip(self.members, parts)]} for i in range(n)]
        return EnsemblePrepared(batch, rows, parts, details, n)

    def predict_tensor(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        """Each member's forward pass on its own backend, for rows packed by :meth:`prepare`:
        (rows, members x classes), a member's columns 0 where its pass did not run."""
        x = batch.numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        k = len(self.members)
        columns = self._output_columns()
        out = np.zeros((x.shape[0], columns[-1].stop if columns else 0), dtype=np.float32)
        offset = k
        for m, ((_, clf, _), shape, width) in enumerate(zip(self.members, self._shapes, self._widths)):
            selected = np.flatnonzero(x[:, m] > 0.5)
            if selected.size:
                inputs = np.ascontiguousarray(x[selected, offset:offset + width]).reshape(-1, *shape)
                out[selected, columns[m]] = clf.predict_tensor(inputs)
            offset += width
        return out

    @property
    def forward_width(self) -> int:
        """Every member's columns side by side (see :meth:`_output_columns`)."""
        return sum(clf.forward_width for _, clf, _ in self.members)

    def _output_columns(self) -> list[slice]:
        """Each member's columns in a :meth:`predict_tensor` row (its ``forward_width``: a face
        model adds its picture distances to the classes' probabilities)."""
        out, start = [], 0
        for _, clf, _ in self.members:
            out.append(slice(start, start + clf.forward_width))
            start += clf.forward_width
        return out

    def finish(self, prepared: EnsemblePrepared, forward: np.ndarray | None) -> np.ndarray:
        """The weighted average of the members' probabilities for every prepared image; each
        image's details get ``member_p_value`` (the smallest member p-value, None when no member
        has a rule) and each member's entry its own ``p_value``."""
        c = len(self.classes)
        position = {i: r for r, i in enumerate(prepared.rows)}
        total = np.zeros((prepared.n, c), dtype=np.float64)
        own_probs, own_p = [], []
        columns = self._output_columns()
        for m, ((_, clf, weight), part) in enumerate(zip(self.members, prepared.parts)):
            own = None
            if part.rows:
                own = np.asarray(forward)[[position[i] for i in part.rows], columns[m]]
            probs = clf.finish(part, own)
            own_probs.append(probs)
            total += weight * probs
            rule = clf.rejection_rule
            if rule is None or weight <= 0:
                own_p.append(None)
                continue
            # Scored exactly as the member's own judge scores it: its probabilities before calibration.
            p = member_p_values(rule, clf.uncalibrated(probs, part.details), part.details)
            own_p.append(p)
            for i in range(prepared.n):
                prepared.details[i]["members"][m]["p_value"] = round(float(p[i]), 6)
        if self.combine == FACE_FIRST:
            face_details = prepared.parts[0].details
            decided = np.array([d.get("face") is not None for d in face_details], dtype=bool)
            total = np.where(decided[:, None], own_probs[0], own_probs[1]).astype(np.float64)
            smallest = own_p[0]  # the face model's: "none of these" is a question about faces
        else:
            present = [p for p in own_p if p is not None]
            smallest = np.min(present, axis=0) if present else None
        for i in range(prepared.n):
            # Rounded as the card stores the rule's validation scores (RejectionRule.to_card): p-values
            # are fractions k/n, and 1/15 against the card's 0.066667 would turn a tie into a rejection.
            prepared.details[i][MEMBER_P_VALUE] = None if smallest is None else round(float(smallest[i]), 6)
        return total.astype(np.float32)

    # -- the "none of these" answer (predict, predict_proba, predict_details: Model) ---------------
    def judge(self, probabilities: np.ndarray, details: list[dict[str, Any]]) -> list[bool]:
        """``unknown``, ``closest`` and ``rejection`` in each details dict (as :meth:`Classifier.judge`):
        the ensemble's rule on ``member_p_value``; never unknown without a rule or with ``reject`` off."""
        rule = self.rejection_rule if self.reject else None
        return annotate(probabilities, details, self.classes, rule)

    def forward_input(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Packed rows in which every member's forward pass runs (what timing the networks needs)."""
        k = len(self.members)
        parts = [clf.preprocess_array(images).reshape(len(images), -1) for _, clf, _ in self.members]
        return np.ascontiguousarray(np.concatenate([np.ones((len(images), k), dtype=np.float32), *parts], axis=1))


def _face_first_parts(parts: list[Prepared]) -> list[Prepared]:
    """A cascade's preparations: the face model's forward pass only for the images where a face
    decided (where its face answers together with its own fallback), the other model's only for
    the images where none did."""
    face, other = parts
    decided = {i for i, d in enumerate(face.details) if d.get("face") is not None}
    own = [k for k, i in enumerate(face.rows) if i in decided]
    keep = [k for k, i in enumerate(other.rows) if i not in decided]
    return [replace(face, batch=face.batch[own], rows=[face.rows[k] for k in own]),
            replace(other, batch=other.batch[keep], rows=[other.rows[k] for k in keep])]


def open_ensemble(model_dir: str | os.PathLike, card: ModelCard,
                  load_member: Callable[[Path], Classifier], reject: bool = True) -> EnsembleClassifier:
    """Open the ensemble saved in ``model_dir``: each member with a weight above 0 is checked
    (:func:`check_member`) and opened by ``load_member`` (``load_model`` on the backend asked for);
    the members with weight 0 are not read at all. ``reject=False``: never answer "unknown"."""
    model_dir = Path(model_dir)
    specs = [s for s in ensemble_members(model_dir, card) if s.weight > 0]
    if not specs:
        raise ModelFormatError(f"{model_dir / CARD_NAME}: no member has a weight above 0")
    members = [(s.name, load_member(check_member(model_dir, s)), s.weight) for s in specs]
    reasons = "; ".join(f"{n}: {c.backend_name}" for n, c, _ in members)
    return EnsembleClassifier(members, card, model_dir, backend_reason=f"each member on its own backend ({reasons})",
                              reject=reject)
