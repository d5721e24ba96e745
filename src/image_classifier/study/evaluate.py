"""Evaluate one saved model on any labelled folder (``image-classifier evaluate``): the same
metrics, plots and report files as ``compare``, for one model.

Honesty check: the split a model was trained on (``split.csv`` next to it, or its compare run's,
found by :func:`image_classifier.runs.split_of_model_dir`) says which files it was trained and
validated on; evaluating on a folder that contains them inflates the scores, and the report says
how many such images were scored.
"""
from __future__ import annotations

import csv
import logging
import os
import shlex
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from image_classifier.data.scan import list_dataset
from image_classifier.data.split import load_split
from image_classifier.errors import DatasetError
from image_classifier.evaluate.evaluation import LabelledImage, evaluate_classifier
from image_classifier.evaluate.rejection import measure_unknown_folder, unknown_images
from image_classifier.evaluate.speed import measure_classifier
from image_classifier.fileio import sha256_file
from image_classifier.card import ModelCard
from image_classifier.i18n import DEFAULT, translator
from image_classifier.optionspec import command_line
from image_classifier.models.registry import get_arch, list_archs
from image_classifier.report import write_report
from image_classifier.results import (
    BackendUsed, DataSummary, ModelResult, SplitInfo, Speed, Study, Training, Validation,
)
from image_classifier.runs import resolve_model_dir, split_of_model_dir
from image_classifier.inference.loading import load_model
from image_classifier.study.environment import describe_environment
from image_classifier.study.options import EvaluateOptions

log = logging.getLogger(__name__)


def default_out_dir(arch: str, data_root: Path, subset: str | None) -> Path:
    name = f"evaluate-{arch}-{Path(data_root).resolve().name or 'data'}"
    return Path("runs") / (f"{name}-{subset}" if subset else name)


def _training_manifest(model_dir: Path, card: ModelCard) -> Path | None:
    """The split the model was trained on, when it is where its run keeps it (checked by hash)."""
    candidate = split_of_model_dir(model_dir)
    if candidate is None:
        return None
    expected = card.split_manifest_sha256
    return candidate if expected and sha256_file(candidate) == expected else None


def _seen_hashes(manifest: Path) -> set[str]:
    with manifest.open(encoding="utf-8-sig", newline="") as fh:
        return {row["sha256"] for row in csv.DictReader(fh) if row.get("split") in ("train", "val")}


def reproduce_command(options: EvaluateOptions, out_dir: Path) -> str:
    return shlex.join(["image-classifier", "evaluate", *command_line(replace(options, out=out_dir))])


def run_evaluate(options: EvaluateOptions, *, on_progress: Callable[[str], None] | None = None) -> Study:
    say = on_progress or log.info
    options = options.check()
    timings: dict[str, float] = {}
    model_dir = resolve_model_dir(options.model)
    classifier = load_model(model_dir, backend=options.backend, reject=options.reject, device=options.device)
    unknowns = unknown_images(options.unknown) if options.unknown is not None else None  # checked before scoring
    card = classifier.card
    arch = str(card.architecture or model_dir.name)
    backend = BackendUsed(classifier.backend_name, classifier.backend_reason, classifier.backend.describe())
    say(f"backend: {backend.name} ({backend.reason}); device: {classifier.device}")

    sizes: dict[str, dict[str, int]]
    if options.split is not None:
        split = load_split(options.split, options.data)
        records = split.subset(options.subset)
        items = [LabelledImage.from_record(r) for r in records]
        hashes = {r.rel_path: r.sha256 for r in records}
        sizes = {options.subset: {c: n for c, n in split.sizes()[options.subset].items()}}
        data_classes = list(split.classes)
    else:
        listing = list_dataset(options.data)
        items = [LabelledImage(f.path, f.rel_path, f.class_name) for f in listing.files]
        hashes = {}
        data_classes = list(listing.classes)
        sizes = {"evaluated": {c: sum(1 for it in items if it.class_name == c) for c in data_classes}}
    if not items:
        raise DatasetError(f"no images to evaluate in {options.data}"
                           + (f" (subset {options.subset!r} of {options.split} is empty)" if options.split else ""))
    say(f"evaluating {arch} ({model_dir}) on {len(items)} images of {options.data}")

    warnings: list[str] = []
    alerts: list[str] = []
    manifest = _training_manifest(model_dir, card)
    if manifest is not None:
        seen = _seen_hashes(manifest)
        overlap = [it.rel_path for it in items
                   if (hashes.get(it.rel_path) or sha256_file(it.path)) in seen]
        if overlap:
            alerts.append(
                f"{len(overlap)} of the {len(items)} images were in this model's training or validation "
                f"split ({manifest}); its scores on them are optimistic. Pass --split {manifest} "
                "--subset test to score only images it never saw."
            )
    for w in alerts:
        say(f"warning: {w}")

    t0 = time.perf_counter()
    ev = evaluate_classifier(classifier, items)
    speed = None
    if options.speed:
        sample = ev.predictions[0].path  # an image that decodes
        speed = Speed.from_json(measure_classifier(classifier, model_dir=model_dir, sample_image=sample,
                                                   config=options.speed_config))
    timings["evaluation_seconds"] = time.perf_counter() - t0
    open_set = None
    if unknowns is not None:
        if classifier.rejects:
            open_set = measure_unknown_folder(classifier, ev.probs, [p.details for p in ev.predictions], ev.correct,
                                              unknowns, source=os.fspath(options.unknown))
            timings["open_set_seconds"] = open_set.seconds or 0.0  # type: ignore[union-attr]
        else:
            say("warning: --unknown: the model has no rejection rule (trained before it existed) or --no-reject "
                "was given; nothing to measure")
    if ev.skipped:
        warnings.append(f"{len(ev.skipped)} unreadable image(s) skipped: {', '.join(list(ev.skipped)[:5])}")

    out_dir = Path(options.out) if options.out is not None else default_out_dir(
        arch, options.data, options.subset if options.split else None)
    best = card.best or {}
    entry = ModelResult(
        name=arch, model_dir=os.fspath(model_dir),
        family=get_arch(arch).family if arch in list_archs() else None,
        validation=Validation(best.get("val_accuracy"), best.get("val_loss"), best.get("epoch")),
        test=ev.metrics, speed=speed,
        training=Training(card.train_seconds, card.peak_rss_mb, list(card.history or [])),
        errors=ev.errors, skipped=ev.skipped,
        # Which backend computed these predictions and timings, and why it was chosen.
        backend=backend,
        calibration=card.calibration.for_metrics() if card.calibration else None,
        open_set=open_set,
    )

    def title(lang: str) -> str:
        t = translator(lang)
        what = (t("report.title.evaluate_subset", subset=t(f"report.subset.{options.subset}"), split=options.split)
                if options.split else t("report.title.evaluate_all"))
        return t("report.title.evaluate", arch=arch, data=Path(options.data).name, what=what)

    study = Study(
        title=title(DEFAULT),  # metrics.json's, the same in every language
        scored_set="test images" if options.split and options.subset == "test" else
                   f"{options.subset} images" if options.split else "images",
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=reproduce_command(options, out_dir),
        invoked_as=options.invoked_as,
        data=DataSummary(
            root=os.fspath(options.data), classes=data_classes, num_images=ev.metrics.n,
            split=SplitInfo(path=os.fspath(options.split) if options.split else None, sizes=sizes),
            warnings=warnings,
        ),
        environment=describe_environment(device=classifier.device),  # the device that computed
        speed_config=options.speed_config.to_dict() if speed else None,
        models=[entry],
        alerts=alerts,
        timings=timings,
    )
    write_report(study, out_dir, lang=options.lang, title=title(options.lang))
    return study
