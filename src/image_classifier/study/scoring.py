"""Compare's step 4 for one model: score it on the test split once, and everything that reads that pass.

:func:`score_model` takes one trained model as the evidence step loaded it (with its validation
pass: :class:`~image_classifier.study.evidence.ValidationPass`) and, in this order: scores the test
split, measures "none of these" (the unknown folder's test half, or leave-one-class-out on the
penultimate features a :class:`FeatureTap` recorded during the validation and test passes), draws
the Grad-CAM overlays of its errors, times it, and audits it for shortcuts. What every model shares (the decoded images, the audit's variants, the
unknown images, the split's items, the options) travels in a :class:`ScoringContext`; what it
returns is a :class:`ScoredModel`.

Each activity's seconds are kept apart (a :class:`Stopwatch`), so compare's ``timings`` in
``metrics.json`` count each only for its own work: the test evaluation without the open-set
measurement, the overlays or the speed measurement, and so on.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np

from image_classifier.evaluate.evaluation import DecodeCache, Evaluation, LabelledImage, evaluate_classifier
from image_classifier.evaluate.rejection import (
    FeatureTap, UnknownImage, face_leave_one_class_out, leave_one_class_out, measure_unknown_folder,
)
from image_classifier.evaluate.shortcut import AuditImages, audit_classifier
from image_classifier.evaluate.speed import measure_classifier
from image_classifier.faces import FaceCache, FaceSurvey
from image_classifier.inference.model import Model
from image_classifier.models.registry import get_arch
from image_classifier.results import (
    FaceAccuracy, ModelResult, OpenSet, ShortcutAudit, Speed, Training, Validation,
)
from image_classifier.study.evidence import ValidationPass
from image_classifier.study.explanations import explain_errors
from image_classifier.study.options import CompareOptions
from image_classifier.training import TrainResult

# The activities a model's scoring times apart (the keys of ScoredModel.seconds); compare adds
# them up over the models into metrics.json's timings.
TEST = "test"  # the test split's scoring: decode, predict, metrics
OPEN_SET = "open_set"  # "none of these" measured on the test split
EXPLAIN = "explain"  # Grad-CAM of the misclassified test images
SPEED = "speed"  # the latency / throughput measurement
SHORTCUT_AUDIT = "shortcut_audit"  # face masked, only the face, greyscale


@dataclass
class Stopwatch:
    """Seconds per activity, added up by key (``with watch.timed(key): ...`` or ``watch.add``)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(key, time.perf_counter() - start)

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def add_all(self, seconds: dict[str, float]) -> None:
        for key, value in seconds.items():
            self.add(key, value)

    def __getitem__(self, key: str) -> float:
        return self.seconds.get(key, 0.0)


@dataclass
class ScoringContext:
    """What every model's scoring shares: built once by compare, before the first model."""

    options: CompareOptions
    say: Callable[[str], None]
    models: int  # how many models the run scores (the "[model i/n]" of the progress lines)
    test_items: list[LabelledImage]
    val_items: list[LabelledImage]
    train_items: list[LabelledImage]  # leave-one-class-out samples a few per class
    cache: DecodeCache  # decoded images shared by every model's validation and test passes
    face_cache: FaceCache
    survey: FaceSurvey | None  # the face survey, when faces were looked for
    audit_images: AuditImages | None  # the shortcut audit's variants; None when the audit is off
    unknowns: list[UnknownImage] | None  # the unknown folder's test half; None: leave-one-class-out

    @property
    def run_dir(self) -> Path:
        return self.options.run_dir

    @property
    def sample_image(self) -> Path:
        """The image the speed measurements time (the same for every model)."""
        return self.test_items[0].path


@dataclass
class ScoredModel:
    """One model's outcome of step 4."""

    entry: ModelResult  # its row of the study (backends filled in later by compare)
    evaluation: Evaluation  # its test-split scoring
    seconds: dict[str, float]  # seconds per activity (the keys above)


def score_model(ctx: ScoringContext, i: int, arch: str, trained: TrainResult, vp: ValidationPass) -> ScoredModel:
    """Score model number ``i`` (``arch``, trained as ``trained``, loaded with its validation pass
    ``vp``) on the test split, once; see the module docstring."""
    options, say = ctx.options, ctx.say
    step = f"[model {i}/{ctx.models}]"
    watch = Stopwatch()
    say(f"{step} evaluating {arch} on {len(ctx.test_items)} test images and timing it")
    model_dir = Path(trained.model_dir)
    classifier = vp.classifier
    # Leave-one-class-out (no unknown folder) reads the penultimate features the tap recorded
    # during the validation pass, and records the test pass's.
    tap = vp.tap if ctx.unknowns is None else None
    with watch.timed(TEST), _recording(tap):
        ev = evaluate_classifier(classifier, ctx.test_items, cache=ctx.cache)
    with watch.timed(OPEN_SET):
        if ctx.unknowns is not None:
            say(f"{step} scoring the {len(ctx.unknowns)} images of {options.unknown} (none of the classes)")
        open_set = _open_set(classifier, ev, tap, ctx, vp)
        if open_set is not None:
            say(f"{step} {arch}: none of these ({open_set.method}): AUROC {_fmt(open_set.auroc)}, "
                f"unknowns accepted {_fmt(open_set.unknown_accept_rate)}, known accuracy when kept "
                f"{_fmt(open_set.known_accuracy_kept)} ({_fmt(open_set.known_kept_rate)} kept)")
    # Why: Grad-CAM of the misclassified test images only (the report's error gallery).
    explained = explain_errors(classifier, ev, ctx.run_dir, arch, cache=ctx.cache)
    watch.add(EXPLAIN, explained.seconds)
    if explained.explained:
        say(f"{step} {arch}: Grad-CAM of {explained.explained} misclassified test images "
            f"in {explained.seconds:.1f} s")
    with watch.timed(SPEED):
        speed = measure_classifier(classifier.for_timing(), model_dir=model_dir, sample_image=ctx.sample_image,
                                   config=options.speed)
    shortcut = None
    if ctx.audit_images is not None:
        with watch.timed(SHORTCUT_AUDIT):
            say(f"{step} shortcut audit of {arch}: {len(ev.predictions)} test images with the face masked, "
                "only the face, and in greyscale")
            shortcut = audit_classifier(classifier, ev, ctx.audit_images)
        say(f"{step} {arch}: {_audit_line(shortcut)}")
    r = trained
    entry = ModelResult(
        name=arch, family=get_arch(arch).family, model_dir=os.path.relpath(model_dir, ctx.run_dir),
        validation=Validation(r.best_val_accuracy, r.best_val_loss, r.best_epoch), test=ev.metrics,
        speed=Speed.from_json(speed), training=Training(r.train_seconds, r.peak_rss_mb, list(r.history)),
        errors=explained.errors, skipped=ev.skipped,
        faces=face_accuracy(ev, ctx.survey) if ctx.survey is not None else None, shortcut=shortcut,
        calibration=classifier.card.calibration.for_metrics() if classifier.card.calibration else None,
        open_set=open_set,
    )
    return ScoredModel(entry, ev, dict(watch.seconds))


def _recording(tap: FeatureTap | None) -> ContextManager[Any]:
    """The tap attached for the pass inside it, when the model has one."""
    return tap.attached() if tap is not None else contextlib.nullcontext()


def face_accuracy(ev: Evaluation, survey: FaceSurvey) -> FaceAccuracy:
    """Test accuracy on the images with a face and on those without (by the survey's detections)."""
    counts: dict[bool, list[bool]] = {True: [], False: []}
    for p in ev.predictions:
        found = survey.has_face(p.rel_path)
        if found is not None:
            counts[found].append(p.correct)

    def accuracy(rows: list[bool]) -> float | None:
        return sum(rows) / len(rows) if rows else None

    return FaceAccuracy(len(counts[True]), accuracy(counts[True]), len(counts[False]), accuracy(counts[False]))


def _audit_line(a: ShortcutAudit) -> str:
    def acc(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    faces = (f"face masked {acc(a.face_masked)}, only the face {acc(a.face_only)} on {a.images_with_face} images "
             f"with a face ({a.no_face} without, left out)" if a.images_with_face else "no test image with a face found")
    return (f"test accuracy {acc(a.accuracy)}; {faces}; greyscale {acc(a.greyscale)} on {a.greyscale_images}; "
            f"chance {a.chance:.3f}; audit took {a.seconds:.1f} s")


# ---- "none of these" (issue 14) ------------------------------------------------------------------

def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _open_set(classifier: Model, ev: Evaluation, tap: FeatureTap | None, ctx: ScoringContext,
              vp: ValidationPass) -> OpenSet | None:
    """The rule of ``classifier`` measured: on the unknown folder's test half when given, else
    leave-one-class-out on the network's penultimate features (of the validation images and the
    training sample, recorded in ``vp``; of the test images, by ``tap`` during the test pass), or
    for a face model on the face survey's descriptors."""
    options = ctx.options
    if ctx.unknowns is not None:
        return measure_unknown_folder(classifier, ev.probs, [p.details for p in ev.predictions], ev.correct,
                                      ctx.unknowns, cache=ctx.cache, source=os.fspath(options.unknown))
    if classifier.features_network is None and ctx.survey is not None:  # faces: the survey's descriptors
        return face_leave_one_class_out(ctx.survey.analyses, classifier.classes,
                                        {"train": ctx.train_items, "val": ctx.val_items, "test": ctx.test_items},
                                        options.keep)
    if tap is None or vp.features is None or vp.train_sample is None:
        return None
    t0 = time.perf_counter()
    index = {c: k for k, c in enumerate(classifier.classes)}

    def labels(items: list[Any]) -> np.ndarray:
        return np.array([index[it.class_name] for it in items], dtype=np.int64)

    train_features, sample = vp.train_sample
    return leave_one_class_out((train_features, labels(sample)),
                               (vp.features, labels([ctx.val_items[k] for k in vp.kept])),
                               (tap.features(), np.array([index[p.true] for p in ev.predictions], dtype=np.int64)),
                               len(classifier.classes), options.keep, seconds=time.perf_counter() - t0)
