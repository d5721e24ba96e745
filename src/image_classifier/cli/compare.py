"""``image-classifier compare DATA``: the whole study in one command (see image_classifier.compare)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

DEFAULT_MODELS = "simple_cnn,alexnet_like,mobilenet_v2,resnet50"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train several architectures on one split, evaluate them on the test split, write a report",
        description=(
            "Audit DATA, make (or reuse) one train/val/test split, train every model on it, pick the best "
            "by validation accuracy, evaluate every model once on the test split (accuracy with 95%% "
            "bootstrap CI, macro-F1, log-loss, calibration, McNemar tests), measure size and speed on "
            "this machine, and write OUT/report.html, report.md, comparison.csv, metrics.json."
        ),
    )
    p.add_argument("data", type=Path, help="folder with one sub-folder of images per class")
    p.add_argument("--models", default=None,
                   help=f"comma-separated architectures (default: {DEFAULT_MODELS}, plus face_embedding when "
                        "at least 70 %% of the images show a face)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<DATA folder name>)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, training and bootstrap (default 0)")
    p.add_argument("--split", type=Path, default=None,
                   help="use this split manifest (default: OUT/split.csv when it exists, else a new split)")
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
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bars")
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
    from image_classifier.errors import ImageClassifierError

    out: dict[str, Path] = {}
    for item in items:
        arch, sep, path = item.partition("=")
        if not sep or not arch or not path:
            raise ImageClassifierError(f"--weights {item!r}: write ARCH=PATH, e.g. resnet50=weights/resnet50.pth")
        out[arch.strip()] = Path(path)
    return out


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    from image_classifier.errors import ImageClassifierError

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
    from image_classifier.compare import CompareConfig, run_compare, weights_for
    from image_classifier.errors import ImageClassifierError
    from image_classifier.evaluate.speed import SpeedConfig
    from image_classifier.models.registry import list_archs
    from image_classifier.report.tables import format_terminal_table
    from image_classifier.train import default_cache_dir

    runtime.configure()
    models = [m.strip() for m in (args.models or DEFAULT_MODELS).split(",") if m.strip()]
    unknown = [m for m in models if m not in list_archs()]
    if unknown:
        raise ImageClassifierError(f"unknown architecture(s) {', '.join(unknown)}; available: {', '.join(list_archs())}")
    weights = parse_weights(args.weights)
    face_model = args.models is None and not args.no_faces  # may join the models: its weights may be given
    candidates = [*models, "face_embedding"] if face_model else models
    stray = [a for a in weights if not any(weights_for(m, {a: weights[a]}) for m in candidates)]
    if stray:
        raise ImageClassifierError(f"--weights given for {', '.join(stray)}, which no model in --models uses")
    out = args.out or Path("runs") / (args.data.resolve().name or "run")
    speed = SpeedConfig()
    if args.speed_repeats is not None:
        speed.repeats = speed.e2e_repeats = max(1, args.speed_repeats)
    config = CompareConfig(
        data_root=args.data, out_dir=out, models=models, seed=args.seed, split_csv=args.split,
        val_fraction=args.val, test_fraction=args.test, weights=weights,
        recipe_overrides=parse_overrides(args.overrides), speed=speed, progress=not args.no_progress,
        cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
        invoked_as=shlex.join(["image-classifier", *sys.argv[1:]]), export=not args.no_export,
        faces=not args.no_faces, add_face_model=face_model,
        resume="fresh" if args.fresh else "resume" if args.resume else "auto",
    )
    result = run_compare(config, on_progress=lambda line: print(line, file=sys.stderr, flush=True))
    print()
    print(format_terminal_table(result.study))
    print()
    from image_classifier.report import narrative

    print(narrative.headline(result.study))
    for line in narrative.significance_lines(result.study):
        print(f"  - {line}")
    print()
    print(f"report: {result.report_html}")
    print(f"best model: {result.run_dir / 'best'} -> {result.study['selection']['model_dir']}")
    best = next(m for m in result.study["models"] if m["name"] == result.best)
    serving = best.get("serve_backend") or {}
    if serving:
        print(f"`image-classifier serve {result.run_dir}` will use backend {serving['name']} ({serving['reason']})")
    return 0
