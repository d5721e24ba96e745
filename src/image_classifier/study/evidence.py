"""``compare``'s step 3: the evidence on the training and validation images, and the choice of the
model to serve (:mod:`image_classifier.evaluate.choice`). The test split is not read here.

For every trained model, one pass over the validation images as it is saved (calibrated, with its
"none of these" rule), recording a CNN's penultimate features for leave-one-class-out; then:

* **cross-validation** where a model refits in seconds: the face model, 5 x 2 folds over train +
  validation (its face head exactly as trained, its fallback as a linear head on the frozen
  MobileNetV2 features it is built on; :mod:`image_classifier.evaluate.cross_validation`). A
  fine-tuned network is not refitted: a head on its frozen ImageNet features scored 0.875 on the
  athletes where the fine-tuned ResNet-50 scores about 0.93, so such a stand-in would mislead;
* **composites**: a face-first cascade of the face model with each whole-image model (the face
  answers where it matches a known person's, the other model elsewhere), and the weighted mix of
  all models with the lowest validation log-loss, its estimate cross-fitted (each validation image
  mixed with weights fitted on the others), so it is not the one its weights were fitted to;
* **strangers**, for a folder of people (:mod:`image_classifier.evaluate.strangers`): on the
  validation half of ``--unknown``, else leave-one-class-out on validation.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from image_classifier.card import ModelCard
from image_classifier.data.decode import decode_each
from image_classifier.evaluate.choice import CASCADE, ENSEMBLE, MODEL, Candidate, Choice, CrossValidated, choose
from image_classifier.evaluate.cross_validation import summarise
from image_classifier.evaluate.ensemble_selection import cross_fitted
from image_classifier.evaluate.metrics import true_class_nll
from image_classifier.evaluate.evaluation import DecodeCache, LabelledImage, label_indices, predict_items
from image_classifier.evaluate.rejection import FeatureTap, UnknownImage, features_of, sample_per_class
from image_classifier.evaluate.strangers import (
    Scorer, Trial, cnn_loco, face_first, face_loco, loco_trials, measurable, single, strangest, strangers_accepted,
)
from image_classifier.faces import FaceSurvey
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.model import Model
from image_classifier.inference.rejection import DEFAULT_KEEP, score_kinds
from image_classifier.models.registry import get_arch
from image_classifier.training.cache import ImageCache
from image_classifier.training.face_head import face_model_oof, labelled_faces
from image_classifier.training.folds import linear_probe_oof, repeated_folds
from image_classifier.training.frozen_features import FrozenFeatures

log = logging.getLogger(__name__)

LEAVE_ONE_CLASS_OUT = "leave-one-class-out on validation"
UNKNOWN_HALF = "the validation half of the unknown folder"


@dataclass
class ValidationPass:
    """One trained model on the validation images (and what else compare reuses of that pass)."""

    classifier: Classifier  # one trained model (a single kind: ensembles are composed later)
    probs: np.ndarray  # (kept, classes), as the model serves them
    details: list[dict[str, Any]]
    kept: list[int]  # indices into the validation items of the images that decoded
    tap: FeatureTap | None = None  # records penultimate features (leave-one-class-out), or None
    features: np.ndarray | None = None  # the kept images' penultimate features
    #: Penultimate features of a sample of training images, and the sample itself.
    train_sample: tuple[np.ndarray, list[LabelledImage]] | None = None
    #: The unknown folder's validation half: (probabilities, details, indices of the images that decoded).
    unknown: tuple[np.ndarray, list[dict[str, Any]], list[int]] | None = None


@dataclass
class Composite:
    """A cascade or a mix that ``compare`` saves (as ``models/ensemble``) when it is chosen."""

    name: str
    kind: str  # CASCADE or ENSEMBLE
    weights: dict[str, float]  # a cascade's: the share of validation images each member answered
    description: str
    method: str  # "face_first" or "mean"


@dataclass
class Evidence:
    passes: dict[str, ValidationPass]
    candidates: list[Candidate]
    choice: Choice
    composites: dict[str, Composite]
    val_items: list[LabelledImage]  # the validation images every model read, in the candidates' order
    strangers: str  # where the strangers came from ("" when not measured)
    trials: list[Trial] = field(default_factory=list)
    keep: float = DEFAULT_KEEP
    #: Seconds of the evidence beyond the validation passes (cross-validation, features,
    #: leave-one-class-out, the composites, the choice).
    seconds: float = 0.0


@dataclass
class EvidenceInputs:
    """What the evidence reads: built by compare from its split, survey and options."""

    models: list[str]
    classes: list[str]
    train_records: list[Any]  # split records
    val_records: list[Any]
    survey: FaceSurvey | None
    keep: float
    seed: int
    people: bool  # the face survey takes the folder to be people: turning strangers away is required
    unknown_val: list[UnknownImage] | None  # the validation half of --unknown
    weights: dict[str, Path | None]  # ImageNet weights file per architecture (None: searched)
    cache_dir: Path | None
    progress: bool
    composites: bool = True  # the cascades and the mix are candidates (compare --no-ensemble: not)


def _unknown_pass(classifier: Model, images: Sequence[UnknownImage], cache: DecodeCache
                  ) -> tuple[np.ndarray, list[dict[str, Any]], list[int]]:
    decoded = decode_each(images, lambda u: cache.get(u.path, classifier), name=lambda u: u.rel_path)
    if not decoded.images:
        return np.empty((0, len(classifier.classes))), [], []
    probs, details = classifier.predict_details(decoded.images)
    return probs, list(details), list(decoded.kept)


def validation_pass(classifier: Model, val_items: Sequence[LabelledImage], train_items: Sequence[LabelledImage],
                    cache: DecodeCache, *, tap_features: bool, unknown: Sequence[UnknownImage] | None
                    ) -> ValidationPass:
    """One model's pass over the validation images (and the unknown folder's validation half),
    with its penultimate features when ``tap_features`` (a CNN with leave-one-class-out to come)."""
    network = classifier.features_network if tap_features else None
    tap = FeatureTap(network) if network is not None else None
    if tap is not None and not tap.available:
        tap = None
    with tap.attached() if tap is not None else contextlib.nullcontext():
        probs, kept, details = predict_items(classifier, val_items, cache=cache)
    vp = ValidationPass(classifier, probs, list(details), list(kept), tap)
    if tap is not None:
        vp.features = tap.features()
        sample = sample_per_class(train_items)
        feats, sample_kept = features_of(classifier, tap, sample, cache)
        vp.train_sample = (feats, [sample[k] for k in sample_kept])
    if unknown is not None:
        vp.unknown = _unknown_pass(classifier, unknown, cache)
    return vp


def _real_p_values(classifier: Model, probs: np.ndarray, details: Sequence[dict[str, Any]]) -> np.ndarray:
    """The model's own conformal p-values (its saved rule), 1.0 everywhere without a rule."""
    rule = classifier.rejection_rule
    if rule is None:
        return np.ones(len(probs))
    return rule.p_values(*score_kinds(classifier.uncalibrated(probs, details), details))


def _face_cv(arch: str, card: ModelCard, inputs: EvidenceInputs, image_cache: ImageCache,
             say: Callable[[str], None]) -> CrossValidated | None:
    """The face model's 5 x 2 out-of-fold estimate over train + validation (None when the data cannot
    be split so, or a record cannot be decoded for its fallback)."""
    records = list(inputs.train_records) + list(inputs.val_records)
    labels = np.array([r.label for r in records], dtype=np.int64)
    try:
        folds = repeated_folds(labels, [r.group for r in records], seed=inputs.seed)
    except ValueError as err:
        say(f"{arch}: no cross-validation ({err})")
        return None
    features = FrozenFeatures(arch, inputs.weights.get(arch), inputs.cache_dir, image_cache, progress=inputs.progress)
    x, kept = features.compute(records)
    if len(kept) != len(records):
        say(f"{arch}: no cross-validation ({len(records) - len(kept)} images could not be decoded)")
        return None
    fallback = linear_probe_oof(x, labels, folds, len(inputs.classes))
    analyses = [inputs.survey.analyses.get(r.rel_path) if inputs.survey is not None else None for r in records]
    oof = face_model_oof(analyses, labels, folds, len(inputs.classes), fallback, c=card.face_head_c,
                         max_distance=card.face_max_distance, alone_within=card.face_alone_within)
    return summarise(oof, labels, folds, "face head and bank refitted per fold (its C and max distance); "
                     "no-face fallback: a linear head on its frozen MobileNetV2 features")


def gather_evidence(inputs: EvidenceInputs, passes: dict[str, ValidationPass], *, image_cache: ImageCache,
                    say: Callable[[str], None]) -> Evidence:
    """Build every candidate's evidence from the validation ``passes`` and choose (see the module docstring)."""
    t0 = time.perf_counter()
    models = [m for m in inputs.models if m in passes]
    val_items = [LabelledImage.from_record(r) for r in inputs.val_records]
    common = sorted(set.intersection(*(set(passes[m].kept) for m in models)))
    items = [val_items[i] for i in common]
    y = label_indices(inputs.classes, items)
    face_val = np.array([bool(inputs.survey is not None and inputs.survey.has_face(it.rel_path)) for it in items])

    def aligned(m: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
        row = {i: k for k, i in enumerate(passes[m].kept)}
        rows = [row[i] for i in common]
        return np.asarray(passes[m].probs)[rows], [passes[m].details[k] for k in rows]

    probs, details = {}, {}
    for m in models:
        probs[m], details[m] = aligned(m)
    # What each model's family adds to its validation pass (KIND_EVIDENCE; no kind is named here).
    kinds = {m: KIND_EVIDENCE.get(get_arch(passes[m].classifier.arch).family, KindEvidence()) for m in models}
    leads = [m for m in models if kinds[m].leads_cascade]
    whole = [m for m in models if m not in leads]

    # ---- strangers: trials every model is scored in -----------------------------------------------
    trials: list[Trial] = []
    strangers_source = ""
    if inputs.people and inputs.unknown_val is not None:
        trials, strangers_source = _folder_trial(models, passes, common, probs, details), UNKNOWN_HALF
    elif inputs.people:
        trials = loco_trials(y, face_val, inputs.classes)
        strangers_source = LEAVE_ONE_CLASS_OUT
        for m in models:
            vp = passes[m]
            if kinds[m].loco is not None:
                kinds[m].loco(trials, m, vp, inputs, items, probs[m], details[m])
            elif vp.features is not None and vp.train_sample is not None:
                row = {i: k for k, i in enumerate(vp.kept)}
                feats, sample = vp.train_sample
                train = (feats, label_indices(inputs.classes, sample))
                if not cnn_loco(trials, m, train, vp.features[[row[i] for i in common]]):
                    log.info("%s: leave-one-class-out needs two known classes besides the one left out", m)

    def rejection(scorer: Scorer, members: Sequence[str]) -> np.ndarray | None:
        if not inputs.people or not measurable(trials, members):
            return None
        return strangers_accepted(trials, scorer, inputs.keep)

    # ---- candidates ------------------------------------------------------------------------------
    candidates: list[Candidate] = []
    composites: dict[str, Composite] = {}
    for m in models:
        refit = kinds[m].cross_validate
        cv = refit(m, passes[m].classifier.card, inputs, image_cache, say) if refit is not None else None
        candidates.append(Candidate(m, MODEL, probs[m].argmax(1) == y, true_class_nll(y, probs[m]),
                                    _parameters(passes[m].classifier), cv=cv,
                                    strangers_accepted=rejection(single(m), [m])))
    for f in leads if inputs.composites else []:
        decided = np.array([d.get("face") is not None for d in details[f]])
        for x in whole:
            p = np.where(decided[:, None], probs[f], probs[x])
            name = f"{f}+{x}"
            share = float(decided.mean()) if len(decided) else 0.0
            description = f"{f} where a face matches a known person's, {x} elsewhere"
            candidates.append(Candidate(name, CASCADE, p.argmax(1) == y, true_class_nll(y, p),
                                        _parameters(passes[f].classifier) + _parameters(passes[x].classifier),
                                        strangers_accepted=rejection(face_first(f), [f]),
                                        members=(f, x), description=description))
            composites[name] = Composite(name, CASCADE, _cascade_weights(f, x, share), description, "face_first")
    if inputs.composites and len(models) >= 2:
        fitted, oof = cross_fitted(probs, y, seed=inputs.seed)
        if len(fitted.members) >= 2:
            weights, members = fitted.weights, tuple(fitted.members)
            description = "weighted mean of " + ", ".join(f"{n} {weights[n]:.2f}" for n in members)
            candidates.append(Candidate("ensemble", ENSEMBLE, oof.argmax(1) == y, true_class_nll(y, oof),
                                        sum(_parameters(passes[n].classifier) for n in members),
                                        strangers_accepted=rejection(strangest(members), members),
                                        members=members, description=description))
            composites["ensemble"] = Composite("ensemble", ENSEMBLE, weights, description, "mean")
    choice = choose(candidates, people=inputs.people, seed=inputs.seed)
    return Evidence(passes, candidates, choice, composites, items, strangers_source, trials, inputs.keep,
                    seconds=time.perf_counter() - t0)


def _cascade_weights(face: str, other: str, face_share: float) -> dict[str, float]:
    """A cascade's member "weights": the share of validation images each answered (at least a
    little for each, so that both are opened)."""
    share = min(max(face_share, 0.01), 0.99)
    return {face: share, other: 1.0 - share}


def _parameters(classifier: Classifier) -> int:
    return int(sum(p.numel() for p in classifier.module.parameters()))


def _face_trials(trials: list[Trial], m: str, vp: ValidationPass, inputs: EvidenceInputs,
                 items: Sequence[LabelledImage], probs: np.ndarray, details: Sequence[dict[str, Any]]) -> None:
    """Fill the face model's leave-one-class-out p-values: its bank rebuilt from the training
    images' labelled faces (as training chose them), less the left-out class's."""
    if inputs.survey is None:
        return
    train = list(inputs.train_records)
    analyses = [inputs.survey.analyses.get(r.rel_path) for r in train]
    labels = np.array([r.label for r in train], dtype=np.int64)
    chosen = labelled_faces(analyses, labels)
    rows = [(a.descriptors[k], labels[i]) for i, (a, k) in enumerate(zip(analyses, chosen)) if k is not None]
    if not rows:
        return
    bank = np.stack([d for d, _ in rows]).astype(np.float64)
    bank_labels = np.array([c for _, c in rows], dtype=np.int64)
    descriptors = [None if (a := inputs.survey.analyses.get(it.rel_path)) is None else a.descriptors for it in items]
    face_loco(trials, m, bank, bank_labels, descriptors, vp.classifier.card.face_max_distance,
              _real_p_values(vp.classifier, probs, details))


def _folder_trial(models: Sequence[str], passes: dict[str, ValidationPass], common: list[int],
                  probs: dict[str, np.ndarray], details: dict[str, list[dict[str, Any]]]) -> list[Trial]:
    """The one trial of ``--unknown``: the validation images known, the folder's validation half strangers."""
    kept = sorted(set.intersection(*(set(passes[m].unknown[2]) for m in models)))  # type: ignore[index]
    if not kept:
        return []
    trial = Trial(UNKNOWN_HALF, np.arange(len(common)), np.array(kept))
    for m in models:
        u_probs, u_details, u_kept = passes[m].unknown  # type: ignore[misc]
        row = {i: k for k, i in enumerate(u_kept)}
        rows = [row[i] for i in kept]
        clf = passes[m].classifier
        trial.known_p[m] = _real_p_values(clf, probs[m], details[m])
        trial.strangers_p[m] = _real_p_values(clf, np.asarray(u_probs)[rows], [u_details[k] for k in rows])
    return [trial]


@dataclass(frozen=True)
class KindEvidence:
    """What the evidence does for one family of model beyond its validation pass. Looked up by the
    architecture's family (:data:`KIND_EVIDENCE`, as training's ``AFTER_TRAINING`` is): a family
    without an entry gets the plain pass, a head on its features for leave-one-class-out, no
    cross-validation and no cascade of its own."""

    #: Its out-of-fold estimate over train + validation, where it refits in seconds.
    cross_validate: Callable[[str, ModelCard, EvidenceInputs, ImageCache, Callable[[str], None]],
                             CrossValidated | None] | None = None
    #: Its leave-one-class-out p-values, filled into the trials.
    loco: Callable[[list[Trial], str, ValidationPass, EvidenceInputs, Sequence[LabelledImage], np.ndarray,
                    Sequence[dict[str, Any]]], None] | None = None
    #: It answers first in a cascade with each other model, where its details say a face decided.
    leads_cascade: bool = False


#: Per architecture family, what the evidence adds (a new kind that refits cheaply adds an entry).
KIND_EVIDENCE = {"face": KindEvidence(cross_validate=_face_cv, loco=_face_trials, leads_cascade=True)}
