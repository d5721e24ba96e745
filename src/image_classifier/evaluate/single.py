"""Evaluate one saved model on any labelled folder (``image-classifier evaluate``): the same
metrics, plots and report files as ``compare``, for one model.

Honesty check: when the model comes from a ``compare`` run, that run's ``split.csv`` says which
files it was trained and validated on; evaluating on a folder that contains them inflates the
scores, and the report says how many such images were scored.
"""
from __future__ import annotations

import csv
import logging
import os
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from image_classifier.evaluate.speed import SpeedConfig

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    model_dir: Path
    data_root: Path
    split_csv: Path | None = None
    subset: str = "test"
    out_dir: Path | None = None
    seed: int = 0
    measure_speed: bool = True
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    n_bootstrap: int = 2000
    invoked_as: str = ""
    #: Inference backend (see :data:`image_classifier.inference.BACKENDS`); "auto" = the fastest
    #: measured for this model on this machine, as ``serve`` uses.
    backend: str = "auto"


@dataclass
class EvaluateResult:
    out_dir: Path
    study: dict
    report_html: Path


def default_out_dir(arch: str, data_root: Path, subset: str | None) -> Path:
    name = f"evaluate-{arch}-{Path(data_root).resolve().name or 'data'}"
    return Path("runs") / (f"{name}-{subset}" if subset else name)


def _training_manifest(model_dir: Path, card: dict) -> Path | None:
    """The split.csv of the compare run holding ``model_dir``, when it is the one the model used."""
    if model_dir.parent.name != "models":
        return None
    candidate = model_dir.parent.parent / "split.csv"
    if not candidate.is_file():
        return None
    from image_classifier.fileio import sha256_file

    expected = card.get("split_manifest_sha256")
    return candidate if expected and sha256_file(candidate) == expected else None


def _seen_hashes(manifest: Path) -> set[str]:
    with manifest.open(encoding="utf-8-sig", newline="") as fh:
        return {row["sha256"] for row in csv.DictReader(fh) if row.get("split") in ("train", "val")}


def reproduce_command(config: EvaluateConfig, out_dir: Path) -> str:
    args = ["image-classifier", "evaluate", os.fspath(config.model_dir), os.fspath(config.data_root)]
    if config.split_csv is not None:
        args += ["--split", os.fspath(config.split_csv), "--subset", config.subset]
    args += ["--out", os.fspath(out_dir), "--seed", str(config.seed)]
    if not config.measure_speed:
        args.append("--no-speed")
    if config.backend != "auto":
        args += ["--backend", config.backend]
    return shlex.join(args)


def run_evaluate(config: EvaluateConfig, *, on_progress: Callable[[str], None] | None = None) -> EvaluateResult:
    from image_classifier import load_model
    from image_classifier.compare import machine_info, versions
    from image_classifier.data.scan import list_dataset
    from image_classifier.data.split import load_split
    from image_classifier.errors import DatasetError
    from image_classifier.evaluate.evaluation import LabelledImage, evaluate_classifier
    from image_classifier.evaluate.speed import measure_classifier
    from image_classifier.report import write_report
    from image_classifier.runs import resolve_model_dir
    from image_classifier.fileio import sha256_file

    say = on_progress or log.info
    timings: dict[str, float] = {}
    model_dir = resolve_model_dir(config.model_dir)
    classifier = load_model(model_dir, backend=config.backend)
    card = classifier.card
    arch = str(card.get("architecture", model_dir.name))
    backend = {"name": classifier.backend_name, "reason": classifier.backend_reason,
               "description": classifier.backend.describe()}
    say(f"backend: {backend['name']} ({backend['reason']})")

    sizes: dict[str, dict[str, int]]
    if config.split_csv is not None:
        split = load_split(config.split_csv, config.data_root)
        records = split.subset(config.subset)
        items = [LabelledImage.from_record(r) for r in records]
        hashes = {r.rel_path: r.sha256 for r in records}
        sizes = {config.subset: {c: n for c, n in split.sizes()[config.subset].items()}}
        data_classes = list(split.classes)
    else:
        listing = list_dataset(config.data_root)
        items = [LabelledImage(f.path, f.rel_path, f.class_name) for f in listing.files]
        hashes = {}
        data_classes = list(listing.classes)
        sizes = {"evaluated": {c: sum(1 for it in items if it.class_name == c) for c in data_classes}}
    if not items:
        raise DatasetError(f"no images to evaluate in {config.data_root}"
                           + (f" (subset {config.subset!r} of {config.split_csv} is empty)" if config.split_csv else ""))
    say(f"evaluating {arch} ({model_dir}) on {len(items)} images of {config.data_root}")

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
    ev = evaluate_classifier(classifier, items, n_bootstrap=config.n_bootstrap, seed=config.seed)
    speed = None
    if config.measure_speed:
        kept = {p["rel_path"] for p in ev["predictions"]}
        sample = next(it.path for it in items if it.rel_path in kept)
        speed = measure_classifier(classifier, model_dir=model_dir, sample_image=sample, config=config.speed)
    timings["evaluation_seconds"] = time.perf_counter() - t0
    if ev["skipped"]:
        warnings.append(f"{len(ev['skipped'])} unreadable image(s) skipped: {', '.join(list(ev['skipped'])[:5])}")

    out_dir = Path(config.out_dir) if config.out_dir is not None else default_out_dir(
        arch, config.data_root, config.subset if config.split_csv else None)
    best = card.get("best") or {}
    entry = {
        "name": arch,
        "model_dir": os.fspath(model_dir),
        "validation": {"accuracy": best.get("val_accuracy"), "loss": best.get("val_loss"),
                       "best_epoch": best.get("epoch")},
        "test": ev["test"],
        "speed": speed,
        "training": {"seconds": card.get("train_seconds"), "peak_rss_mb": card.get("peak_rss_mb"),
                     "history": card.get("history") or []},
        "errors": ev["errors"],
        "skipped": ev["skipped"],
        # Which backend computed these predictions and timings, and why it was chosen.
        "backend": backend,
    }
    what = f"subset {config.subset!r} of {config.split_csv}" if config.split_csv else "all images"
    study = {
        "title": f"Evaluation of {arch} on {Path(config.data_root).name} ({what})",
        "scored_set": "test images" if config.split_csv and config.subset == "test" else
                      f"{config.subset} images" if config.split_csv else "images",
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": reproduce_command(config, out_dir),
        "invoked_as": config.invoked_as,
        "data": {
            "root": os.fspath(config.data_root),
            "classes": data_classes,
            "num_images": ev["test"]["n"],
            "split": {"path": os.fspath(config.split_csv) if config.split_csv else None, "sizes": sizes},
            "warnings": warnings,
        },
        "machine": machine_info(),
        "versions": versions(),
        "speed_config": config.speed.to_dict() if speed else None,
        "models": [entry],
        "pairwise": [],
        "alerts": alerts,
        "timings": timings,
    }
    files = write_report(study, out_dir)
    return EvaluateResult(out_dir, study, files.html)
