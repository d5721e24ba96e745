"""The whole study in one call: audit, split, train every model, evaluate on the test split once,
measure size and speed, pick the best by validation, write the report.

The order of operations is the point of this module:
- every model shares one split (made once, saved as ``split.csv``, reused on re-runs);
- the best model is chosen on the validation split only; the test split is scored once per
  model, after all training, and never feeds back into any choice;
- everything the report says is computed here and stored in ``metrics.json``.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import platform
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from image_classifier.errors import DatasetError, ImageClassifierError
from image_classifier.evaluate.speed import SpeedConfig
from image_classifier.fileio import atomic_write_text

if TYPE_CHECKING:
    from image_classifier.faces import FaceCache, FaceSurvey

log = logging.getLogger(__name__)

#: The study's four architectures, in the order the study presents them.
DEFAULT_MODELS = ("simple_cnn", "alexnet_like", "mobilenet_v2", "resnet50")
SELECTION_CRITERION = "highest validation accuracy; ties broken by lower validation loss"


@dataclass
class CompareConfig:
    data_root: Path
    out_dir: Path
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    seed: int = 0
    split_csv: Path | None = None
    val_fraction: float | None = None
    test_fraction: float | None = None
    weights: dict[str, Path] = field(default_factory=dict)
    #: Dotted recipe overrides: {"*": {...}} applies to every model, {"arch": {...}} to one.
    recipe_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    n_bootstrap: int = 2000
    progress: bool = True
    #: Decoded-image store shared with ``train`` (re-runs skip decoding); None = memory only.
    cache_dir: Path | None = None
    #: How the run was invoked (for the report); the reproduce command is built from the config.
    invoked_as: str = ""
    #: Export each model (up to ``compare_backends.MAX_EXPORT_PARAMS``) to ONNX and time PyTorch
    #: against ONNX Runtime; False (``--no-export``) times PyTorch only.
    export: bool = True
    #: Look for faces in every image (reported per class, and per model: test accuracy on the images
    #: with and without a face); False (``--no-faces``) skips it, and the face model with it.
    faces: bool = True
    #: Add ``face_embedding`` to ``models`` when the face survey finds a face in at least 70 % of the
    #: images (the CLI sets this when ``--models`` was not given).
    add_face_model: bool = False
    #: What to do with models already in ``out_dir`` (see :mod:`image_classifier.compare_resume`):
    #: "auto" reuses finished ones and resumes interrupted ones when their cards match this run and
    #: refuses otherwise; "resume" the same, but there must be a previous run; "fresh" deletes it.
    resume: str = "auto"


@dataclass
class CompareResult:
    run_dir: Path
    study: dict
    best: str
    report_html: Path


# ---- environment description ---------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    import torch

    from image_classifier.machine import cpu_model

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory"] = f"{pages * page_size / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    import matplotlib

    from image_classifier.saved_model import library_versions

    return {**library_versions(), "matplotlib": matplotlib.__version__}


def reproduce_command(config: CompareConfig, split: Any = None) -> str:
    """The explicit command line that redoes this run.

    A split this run made (or reused) with the run's own seed is reproduced from the data by
    ``--seed/--val/--test``, so the command also works on another machine with the same files; a
    split given with ``--split``, or made earlier with another seed, is named explicitly.
    """
    args = ["image-classifier", "compare", os.fspath(config.data_root), "--models", ",".join(config.models),
            "--out", os.fspath(config.out_dir), "--seed", str(config.seed)]
    split_seed = getattr(split, "seed", None)
    if config.split_csv is not None or split is None or split_seed != config.seed:
        args += ["--split", os.fspath(config.split_csv or Path(config.out_dir) / "split.csv")]
    else:
        args += ["--val", repr(split.val), "--test", repr(split.test)]
    for arch, path in sorted(config.weights.items()):
        args += ["--weights", f"{arch}={os.fspath(path)}"]
    for scope, overrides in sorted(config.recipe_overrides.items()):
        for key, value in overrides.items():
            args += ["--set", f"{key}={value}" if scope == "*" else f"{scope}:{key}={value}"]
    if config.speed.repeats != SpeedConfig().repeats:
        args += ["--speed-repeats", str(config.speed.repeats)]
    if not config.export:
        args.append("--no-export")
    if not config.faces:
        args.append("--no-faces")
    return shlex.join(args)


# ---- steps ---------------------------------------------------------------------------------------

def _select_best(results: dict[str, Any]) -> str:
    """By validation accuracy, then validation loss, then the order given (stable)."""
    def key(item: tuple[int, str]) -> tuple[float, float, int]:
        i, name = item
        r = results[name]
        loss = r.best_val_loss if r.best_val_loss is not None else float("inf")
        return (-float(r.best_val_accuracy), float(loss), i)

    return min(enumerate(results), key=key)[1]


def _eta_text(done_seconds: list[float], remaining: int) -> str:
    if not done_seconds or remaining == 0:
        return ""
    avg = sum(done_seconds) / len(done_seconds)
    from image_classifier.report.tables import fmt_seconds

    return f", rough ETA {fmt_seconds(avg * remaining)} for the other {remaining} (at the average so far)"


def weights_for(arch: str, weights: dict[str, Path]) -> Path | None:
    """The weights file given for ``arch``, else one given for an architecture built on the same
    ImageNet weights (``face_embedding``'s fallback is MobileNetV2: ``--weights mobilenet_v2=...`` serves both)."""
    from image_classifier.models.registry import get_arch, list_archs

    if arch in weights:
        return weights[arch]
    source = get_arch(arch).pretrained
    for other, path in sorted(weights.items()):
        if other not in list_archs():
            continue
        spec = get_arch(other).pretrained
        if source is not None and spec is not None and spec.torchvision_weights == source.torchvision_weights:
            return path
    return None


def _survey(config: CompareConfig, audit: Any, face_cache: FaceCache,
            say: Callable[[str], None]) -> FaceSurvey | None:
    """The face survey of the data (None when switched off or when dlib is not installed)."""
    from image_classifier.faces import FaceModelsNotFoundError, survey_faces

    if not config.faces:
        return None
    try:
        survey = survey_faces(audit.records, face_cache, progress=config.progress)
    except FaceModelsNotFoundError as err:
        if "face_embedding" in config.models:
            raise
        say(f"warning: no face survey: {err}")
        return None
    say(f"faces: {survey.with_face} of {survey.images} images show a face "
        f"({100 * survey.detection_rate:.0f} %), found in {survey.seconds:.0f} s")
    if config.add_face_model and "face_embedding" not in config.models:
        if survey.is_face_folder:
            config.models.append("face_embedding")
            say(f"adding face_embedding to the models: {100 * survey.detection_rate:.0f} % of the images show "
                "a face (at least 70 %), so the folder is taken to be photos of people (--models decides)")
        else:
            say(f"not adding face_embedding: only {100 * survey.detection_rate:.0f} % of the images show a face "
                "(it is added from 70 %; --models face_embedding,... adds it anyway)")
    return survey


def face_accuracy(ev: dict, survey: FaceSurvey) -> dict[str, Any]:
    """Test accuracy on the images with a face and on those without (by the survey's detections)."""
    out: dict[str, Any] = {}
    for key, want in (("face", True), ("noface", False)):
        rows = [p["correct"] for p in ev["predictions"] if survey.has_face(p["rel_path"]) is want]
        out[f"test_images_{key}"] = len(rows)
        out[f"test_accuracy_{key}"] = sum(rows) / len(rows) if rows else None
    return out


def _write_predictions_csv(path: Path, per_model: dict[str, dict]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "rel_path", "true", "pred", "confidence", "correct"])
    for name, ev in per_model.items():
        for p in ev["predictions"]:
            writer.writerow([name, p["rel_path"], p["true"], p["pred"], repr(p["confidence"]), p["correct"]])
    atomic_write_text(path, buf.getvalue())  # a kill or a full disk never leaves half a file


def _prepare_run_dir(config: CompareConfig, run_dir: Path, say: Callable[[str], None]) -> None:
    """Check the run directory can be written, and apply --fresh / --resume, before any work."""
    from image_classifier.compare_resume import RESUME_MODES, check_writable, clear_run, has_previous_run
    from image_classifier.runs import model_dir_for

    if config.resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, not {config.resume!r}")
    check_writable(run_dir, [model_dir_for(run_dir, arch) for arch in config.models])
    if config.resume == "resume" and not has_previous_run(run_dir):
        raise ImageClassifierError(f"nothing to resume in {run_dir}: no split.csv and no models (run without --resume)")
    if config.resume == "fresh":
        given = config.split_csv is not None and Path(config.split_csv).resolve() == (run_dir / "split.csv").resolve()
        removed = clear_run(run_dir, keep_split=given)
        if removed:
            say(f"--fresh: removed {len(removed)} files of the previous run in {run_dir}")


def _plan_models(config: CompareConfig, split: Any, run_dir: Path) -> dict[str, Any]:
    """Reuse / resume / train per model; refuses the run when any model there is from another
    configuration (before the split or anything else is written)."""
    from image_classifier.compare_resume import decide, expected_identity, refusal
    from image_classifier.runs import model_dir_for
    from image_classifier.train import resolve_recipe

    def expected(arch: str) -> Callable[[], dict[str, Any]]:
        # Lazy: hashing ImageNet weights is only worth it when there is a model to check.
        return lambda: expected_identity(arch, split, resolve_recipe(arch, _overrides_for(config, arch)),
                                         config.seed, weights_for(arch, config.weights))

    decisions = {arch: decide(arch, model_dir_for(run_dir, arch), expected(arch)) for arch in config.models}
    refused = [d for d in decisions.values() if d.action == "refuse"]
    if refused:
        raise refusal(run_dir, refused)
    return decisions


def _overrides_for(config: CompareConfig, arch: str) -> dict[str, Any] | None:
    return {**config.recipe_overrides.get("*", {}), **config.recipe_overrides.get(arch, {})} or None


def run_compare(config: CompareConfig, *, on_progress: Callable[[str], None] | None = None) -> CompareResult:
    """Run the study; see the module docstring. ``on_progress`` receives one-line status updates."""
    from image_classifier import load_model
    from image_classifier.compare_backends import measure_model_backends
    from image_classifier.compare_resume import discard_stale_resume
    from image_classifier.data.check import audit_dataset
    from image_classifier.data.split import resolve_split
    from image_classifier.evaluate.evaluation import DecodeCache, LabelledImage, evaluate_classifier
    from image_classifier.evaluate.metrics import pairwise_mcnemar
    from image_classifier.evaluate.speed import measure_classifier
    from image_classifier.faces import FaceCache
    from image_classifier.models.registry import get_arch
    from image_classifier.report import write_report
    from image_classifier.runs import model_dir_for, write_best_pointer
    from image_classifier.saved_model import read_card
    from image_classifier.train import ImageCache, TrainResult, train_model

    say = on_progress or log.info
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if not config.models:
        raise DatasetError("no models to compare: pass --models with at least one architecture")
    for arch in config.models:
        get_arch(arch)  # unknown names fail now, not after an hour of training
    run_dir = Path(config.out_dir)
    _prepare_run_dir(config, run_dir, say)

    # 1. Audit and split.
    t0 = time.perf_counter()
    audit = audit_dataset(config.data_root)
    timings["audit_seconds"] = time.perf_counter() - t0
    for w in audit.warnings:
        say(f"warning: {w}")
    if not audit.usable:
        raise DatasetError("the data cannot be used: " + "; ".join(audit.errors))
    face_cache = FaceCache(config.cache_dir)
    t0 = time.perf_counter()
    survey = _survey(config, audit, face_cache, say)
    timings["face_survey_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    split_path = run_dir / "split.csv"
    split_source = config.split_csv or (split_path if split_path.is_file() else None)
    if split_source is not None and config.split_csv is None:
        say(f"reusing the split in {split_source} (--fresh starts over with a new split)")
    split = resolve_split(
        config.data_root, split_source, seed=config.seed,
        val=0.15 if config.val_fraction is None else config.val_fraction,
        test=0.15 if config.test_fraction is None else config.test_fraction,
        audit=audit,
    )
    decisions = _plan_models(config, split, run_dir)
    if split_source is None or Path(split_source).resolve() != split_path.resolve():
        split.save(split_path)
    timings["split_seconds"] = time.perf_counter() - t0
    test_items = [LabelledImage.from_record(r) for r in split.subset("test")]
    if not test_items:
        raise DatasetError("the split has no test images; use a larger --test fraction or more images")
    say(_split_line(split))

    # 2. Train every model on the same split.
    results: dict[str, Any] = {}
    done: list[float] = []
    image_cache = ImageCache(config.cache_dir)
    n = len(config.models)
    to_train = sum(d.action != "reuse" for d in decisions.values())
    for i, arch in enumerate(config.models, 1):
        decision = decisions[arch]
        model_dir = model_dir_for(run_dir, arch)
        if decision.action == "reuse":
            say(f"[model {i}/{n}] {decision.line}")
            results[arch] = TrainResult.from_card(model_dir, read_card(model_dir))
            discard_stale_resume(model_dir)
            r = results[arch]
            say(f"[model {i}/{n}] {arch}: validation accuracy {r.best_val_accuracy:.3f} (epoch {r.best_epoch})")
            continue
        say(f"[model {i}/{n}] {decision.line}{_eta_text(done, to_train - len(done))}")
        t0 = time.perf_counter()
        results[arch] = train_model(
            split, arch, model_dir,
            recipe_overrides=_overrides_for(config, arch),
            weights=weights_for(arch, config.weights),
            seed=config.seed,
            cache=image_cache,
            progress=config.progress,
            resume=decision.action == "resume",
            face_cache=face_cache,
        )
        done.append(time.perf_counter() - t0)
        r = results[arch]
        say(f"[model {i}/{n}] {arch}: validation accuracy {r.best_val_accuracy:.3f} "
            f"(epoch {r.best_epoch}), trained in {done[-1]:.0f} s")
    timings["train_seconds"] = sum(done)

    # 3. Choose on validation, before looking at the test split.
    best = _select_best(results)
    say(f"selected {best} (validation accuracy {results[best].best_val_accuracy:.3f})")

    # 4. Evaluate on the test split and measure size/speed.
    t0 = time.perf_counter()
    cache = DecodeCache()
    evaluations: dict[str, dict] = {}
    models: list[dict] = []
    sample_image = test_items[0].path
    speed_seconds = test_seconds = 0.0
    for i, arch in enumerate(config.models, 1):
        r = results[arch]
        say(f"[model {i}/{n}] evaluating {arch} on {len(test_items)} test images and timing it")
        model_dir = Path(r.model_dir)
        classifier = load_model(model_dir, backend="torch", face_cache=face_cache)
        t1 = time.perf_counter()
        ev = evaluate_classifier(classifier, test_items, cache=cache, n_bootstrap=config.n_bootstrap,
                                 seed=config.seed)
        evaluations[arch] = ev
        if classifier.face_path is not None:
            classifier.face_path.cache = None  # time the face pipeline itself, not a cache hit
        t2 = time.perf_counter()
        speed = measure_classifier(classifier, model_dir=model_dir, sample_image=sample_image, config=config.speed)
        speed_seconds += time.perf_counter() - t2
        test_seconds += t2 - t1
        models.append({
            "name": arch,
            "family": get_arch(arch).family,
            "model_dir": os.path.relpath(model_dir, run_dir),
            "validation": {"accuracy": r.best_val_accuracy, "loss": r.best_val_loss, "best_epoch": r.best_epoch},
            "test": ev["test"],
            "speed": speed,
            "training": {"seconds": r.train_seconds, "peak_rss_mb": r.peak_rss_mb,
                         "epochs_run": len(r.history), "history": list(r.history)},
            "errors": ev["errors"],
            "skipped": ev["skipped"],
            **({"faces": face_accuracy(ev, survey)} if survey is not None else {}),
        })
        del classifier
    # 4b. Inference backends: export to ONNX and time it against eager PyTorch, per model; the
    # measurement also decides (and records) which backend `serve` runs by default.
    export_seconds = backend_seconds = 0.0
    for i, m in enumerate(models, 1):
        model_dir = Path(results[m["name"]].model_dir)
        if config.export:
            say(f"[model {i}/{n}] exporting {m['name']} to ONNX and timing PyTorch against ONNX Runtime")
        info = measure_model_backends(model_dir, m["speed"], export=config.export, sample_image=sample_image,
                                      config=config.speed)
        export_seconds += info["export"]["seconds"]
        backend_seconds += info.pop("measure_seconds")
        if not info["export"]["exported"]:
            say(f"[model {i}/{n}] {m['name']}: {info['export']['reason']}")
        say(f"[model {i}/{n}] {m['name']}: serve will use {info['serve_backend']['name']} "
            f"({info['serve_backend']['reason']})")
        m.update(info)
    pairwise = pairwise_mcnemar({a: evaluations[a]["correct"] for a in config.models})
    # Test-split scoring (decode + predict + metrics) and the speed measurements, apart: the first
    # is the cost of evaluating, the second a choice of how many timing repeats to run.
    timings["test_evaluation_seconds"] = test_seconds
    timings["speed_measurement_seconds"] = speed_seconds
    timings["export_seconds"] = export_seconds
    timings["backend_measurement_seconds"] = backend_seconds
    timings["evaluation_seconds"] = time.perf_counter() - t0

    # 5. Write everything.
    write_best_pointer(run_dir, results[best].model_dir)
    _write_predictions_csv(run_dir / "predictions.csv", evaluations)
    study = {
        "title": f"Image classifier comparison: {Path(config.data_root).name}",
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": reproduce_command(config, split),
        "invoked_as": config.invoked_as,
        "data": {
            "root": os.fspath(config.data_root),
            "classes": list(split.classes),
            "num_images": len(split.records),
            "unreadable": [{"path": u.rel_path, "reason": u.reason} for u in audit.unreadable],
            "split": {"path": "split.csv", "seed": config.seed, "manifest_sha256": split.manifest_sha256,
                      "sizes": _sizes(split)},
            "warnings": list(audit.warnings),
            "duplicates": describe_duplicates(audit, split),
            "faces": survey.to_json() if survey is not None else None,
        },
        "machine": machine_info(),
        "versions": versions(),
        "speed_config": config.speed.to_dict(),
        "selection": {"best": best, "criterion": SELECTION_CRITERION,
                      "model_dir": os.path.relpath(results[best].model_dir, run_dir)},
        "models": models,
        "pairwise": pairwise,
        "timings": timings,
    }
    files = write_report(study, run_dir)
    timings["total_seconds"] = time.perf_counter() - started
    # metrics.json was written by write_report; rewrite it so it includes the total.
    from image_classifier.report.tables import write_metrics_json

    write_metrics_json(study, files.metrics_json)
    return CompareResult(run_dir, study, best, files.html)


# ---- adapters to the data layer's reports --------------------------------------------------------

def _sizes(split: Any) -> dict[str, dict[str, int]]:
    sizes = split.sizes()
    return {subset: {str(c): int(n) for c, n in per_class.items()} for subset, per_class in sizes.items()}


def _split_line(split: Any) -> str:
    sizes = _sizes(split)
    parts = [f"{subset} {sum(v.values())}" for subset, v in sizes.items()]
    return f"split: {', '.join(parts)} images; {len(split.classes)} classes"


def describe_duplicates(audit: Any, split: Any) -> dict:
    """What the audit found and where each duplicate group went, for the report."""
    exact = [list(g) for g in audit.exact_duplicate_groups]
    near = [list(g) for g in audit.near_duplicate_groups]
    in_exact = {p for g in exact for p in g}
    in_near = {p for g in near for p in g}
    summary = split.group_summary()
    groups = []
    for records in split.groups().values():
        files = sorted(r.rel_path for r in records)
        kinds = [k for k, members in (("exact", in_exact), ("near", in_near)) if any(f in members for f in files)]
        subsets = sorted({r.subset for r in records})
        groups.append({"kind": " + ".join(kinds) or "duplicate", "files": files, "subset": ", ".join(subsets)})
    groups.sort(key=lambda g: g["files"][0])
    where = ", ".join(f"{n} in {s}" for s, n in sorted(summary.get("by_subset", {}).items()))
    crossing = summary.get("groups_crossing_subsets", 0)
    text = (f"The data check found {len(exact)} groups of byte-identical files "
            f"({sum(len(g) for g in exact)} files) and {len(audit.near_duplicate_pairs)} near-duplicate pairs "
            f"(the same photo re-encoded or re-cropped) in {len(near)} groups.")
    policy = (f"The split treats each of the {summary.get('duplicate_groups', 0)} duplicate groups "
              f"({summary.get('images_in_groups', 0)} images) as one unit, so no photo is in training "
              f"and in test at once{' (' + where + ')' if where else ''}; groups crossing subsets: {crossing}.")
    return {"summary": text, "policy": policy, "groups": groups, "exact_groups": len(exact),
            "near_pairs": len(audit.near_duplicate_pairs), "crossing_subsets": crossing}
