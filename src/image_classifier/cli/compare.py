"""``image-classifier compare DATA``: the whole study in one command (see image_classifier.study.comparison)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from image_classifier.cli.options import add_device_argument, parse_arch_path
from image_classifier.errors import ImageClassifierError
from image_classifier.i18n import DEFAULT, SUPPORTED
from image_classifier.runs import (
    COMPARISON_CSV_NAME, METRICS_NAME, REPORT_HTML_NAME, REPORT_MD_NAME, SPLIT_NAME,
)
from image_classifier.study.defaults import DEFAULT_MODELS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train several architectures on one split, evaluate them on the test split, write a report",
        description=(
            "Audit DATA, make (or reuse) one train/val/test split, train every model on it, choose the model "
            "to serve on the training and validation images (accuracy with its noise, and for photos of "
            "people turning strangers away), evaluate every model once on the test split (accuracy with 95%% "
            "bootstrap CI, macro-F1, log-loss, calibration, McNemar tests), measure size and speed on "
            f"this machine, and write OUT/{REPORT_HTML_NAME}, {REPORT_MD_NAME}, {COMPARISON_CSV_NAME}, "
            f"{METRICS_NAME}."
        ),
    )
    p.add_argument("data", type=Path, help="folder with one sub-folder of images per class")
    p.add_argument("--models", default=None,
                   help=f"comma-separated architectures (default: {','.join(DEFAULT_MODELS)}, plus face_embedding when "
                        "at least 70 %% of the images show a face)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<DATA folder name>)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, training and bootstrap (default 0)")
    p.add_argument("--split", type=Path, default=None,
                   help=f"use this split manifest (default: OUT/{SPLIT_NAME} when it exists, else a new split)")
    p.add_argument("--val", type=float, default=None, help="validation fraction for a new split")
    p.add_argument("--test", type=float, default=None, help="test fraction for a new split")
    p.add_argument("--weights", action="append", default=[], metavar="ARCH=PATH",
                   help="ImageNet weights file for a pretrained architecture (repeatable), e.g. "
                        "resnet50=../shared/weights/resnet50-keras-imagenet.pth")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="[ARCH:]KEY=VALUE",
                   help="recipe override for every model, or for one with ARCH: (repeatable), "
                        "e.g. --set batch_size=16 --set alexnet_like:phases.0.epochs=30")
    p.add_argument("--speed-repeats", type=int, default=None,
                   help="timed batch-1 calls per model for the latency numbers (default 50)")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="where decoded images are cached between runs (default: $IMAGE_CLASSIFIER_CACHE_DIR "
                        "or ~/.cache/image-classifier/decoded)")
    p.add_argument("--no-cache", action="store_true", help="decode in memory only, write no cache files")
    p.add_argument("--no-export", action="store_true",
                   help="do not export the models to ONNX (then only eager PyTorch is timed and served); by "
                        "default every model up to 100 M parameters gets a verified model.onnx and the report "
                        "compares PyTorch with ONNX Runtime")
    p.add_argument("--no-faces", action="store_true",
                   help="do not look for faces (no face survey, no face_embedding model, no face/no-face test accuracy)")
    p.add_argument("--no-audit", action="store_true",
                   help="skip the shortcut audit (each model's test accuracy with the faces masked, with only "
                        "the faces, and in greyscale)")
    p.add_argument("--no-ensemble", action="store_true",
                   help="serve a single model: no face-first cascades and no weighted mix among the candidates "
                        "(by default they are, and the one chosen is saved as models/ensemble)")
    p.add_argument("--ensemble-max-latency", type=float, default=None, metavar="MS",
                   help="leave out the cascades and mixes whose members' measured single-image latencies add up "
                        "to more than MS milliseconds (e.g. 50)")
    p.add_argument("--keep", type=float, default=0.95, metavar="FRACTION",
                   help="\"none of these\": the fraction of the known validation images each model's rejection "
                        "rule keeps; less familiar images are answered \"unknown\" (default: %(default)s)")
    p.add_argument("--unknown", type=Path, default=None, metavar="DIR",
                   help="a folder of images of none of the classes (nested or flat): each model's rejection "
                        "rule is measured on them against the test split (default: leave-one-class-out on "
                        "the models' features)")
    add_device_argument(p)
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train each model on N processes of this machine through torchrun (DistributedDataParallel; "
                        "on a GPU machine one GPU per process); default 1")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bars")
    p.add_argument("--lang", choices=SUPPORTED, default=DEFAULT,
                   help=f"language of {REPORT_MD_NAME}, {REPORT_HTML_NAME} and their figures: "
                        f"{', '.join(SUPPORTED)} (default {DEFAULT}); {COMPARISON_CSV_NAME}, {METRICS_NAME} and "
                        "what this command prints are the same in every language")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in OUT (also the default when OUT holds one): reuse every finished "
                            "model whose card matches this run (split, recipe, seed, weights, library versions), "
                            "resume the interrupted one from its last checkpoint; unlike the default, fail when "
                            "OUT holds no run")
    again.add_argument("--fresh", action="store_true",
                       help="start over: delete the models, split and best pointer a previous compare wrote in "
                            "OUT (nothing else), then run as if OUT were new")
    p.set_defaults(func=run)


def parse_weights(items: list[str]) -> dict[str, Path]:
    """``--weights ARCH=PATH`` (repeatable) -> {arch: path}."""
    out: dict[str, Path] = {}
    for item in items:
        arch, path = parse_arch_path(item)
        if arch is None:
            raise ImageClassifierError(f"--weights {item!r}: write ARCH=PATH, e.g. resnet50=weights/resnet50.pth")
        out[arch] = path
    return out


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """``--set [ARCH:]KEY=VALUE`` (repeatable) -> {"*" or arch: {key: value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ImageClassifierError(f"--set {item!r}: write KEY=VALUE or ARCH:KEY=VALUE")
        scope, colon, key = key.rpartition(":") if ":" in key else ("*", "", key)
        out.setdefault(scope or "*", {})[key.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    from image_classifier import runtime
    from image_classifier.report import narrative
    from image_classifier.report.tables import format_terminal_table
    from image_classifier.runs import BEST_NAME
    from image_classifier.study.comparison import run_compare
    from image_classifier.study.options import CompareOptions

    runtime.configure()
    options = CompareOptions(
        data=args.data, out=args.out, seed=args.seed, split=args.split, val=args.val, test=args.test,
        models=args.models.split(",") if args.models is not None else None,
        weights=parse_weights(args.weights), overrides=parse_overrides(args.overrides),
        speed_repeats=args.speed_repeats, progress=not args.no_progress, cache=not args.no_cache,
        cache_dir=args.cache_dir, export=not args.no_export, faces=not args.no_faces,
        shortcut_audit=not args.no_audit,
        resume="fresh" if args.fresh else "resume" if args.resume else "auto",
        invoked_as=shlex.join(["image-classifier", *sys.argv[1:]]), lang=args.lang,
        ensemble=not args.no_ensemble, ensemble_max_latency_ms=args.ensemble_max_latency, keep=args.keep, unknown=args.unknown,
        device=args.device, nproc=args.nproc,
    )
    study = run_compare(options, on_progress=lambda line: print(line, file=sys.stderr, flush=True))
    print()
    print(format_terminal_table(study))
    print()
    print(narrative.headline(study))
    for line in narrative.significance_lines(study):
        print(f"  - {line}")
    ensemble = narrative.ensemble_sentences(study)
    if ensemble:
        print(f"ensemble: {ensemble[0]}")
    print()
    print(f"report: {study.report_path}")
    print(f"best model: {study.run_dir / BEST_NAME} -> {study.selection.model_dir}")
    serving = study.best.backends.serve_backend if study.best.backends else None
    if serving:
        print(f"`image-classifier serve {study.run_dir}` will use backend {serving.name} ({serving.reason})")
    return 0
