"""``image-classifier evaluate MODEL_DIR DATA``: the compare report's metrics and plots for one model."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from image_classifier.cli.options import add_device_argument, resolve_device_option
from image_classifier.i18n import DEFAULT, SUPPORTED
from image_classifier.inference import add_backend_argument
from image_classifier.results import ModelResult


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate one saved model on a folder of labelled images (metrics, plots, report)",
        description=(
            "Score a saved model (a model directory, or a compare run directory: its best model) on DATA, "
            "one sub-folder per class: accuracy with 95%% bootstrap CI, macro-F1, per-class "
            "precision/recall/F1, log-loss, calibration (ECE), confusion matrix, misclassified images, "
            "size and speed on this machine. With --split, only the images of one subset of that "
            "manifest are scored (e.g. the test split the model never saw). Class folders the model "
            "does not know are an error; classes missing from DATA are fine."
        ),
    )
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="saved model directory or runs/NAME")
    p.add_argument("data", type=Path, metavar="DATA", help="folder with one sub-folder of images per class")
    p.add_argument("--split", type=Path, metavar="CSV", help="split manifest; score only --subset of it")
    p.add_argument("--subset", default="test", choices=("train", "val", "test"),
                   help="which subset of --split to score (default: test)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where to write the report (default: runs/evaluate-<model>-<DATA name>)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--no-speed", action="store_true", help="skip the size/latency/throughput measurements")
    add_backend_argument(p)
    add_device_argument(p)
    p.add_argument("--no-reject", action="store_true",
                   help="do not apply the model's \"none of these\" rejection rule")
    p.add_argument("--unknown", type=Path, default=None, metavar="DIR",
                   help="a folder of images of none of the model's classes (nested or flat): measure how well "
                        "its rejection rule tells them from DATA's images (AUROC, unknowns accepted)")
    p.add_argument("--lang", choices=SUPPORTED, default=DEFAULT,
                   help="language of report.md, report.html and their figures: "
                        f"{', '.join(SUPPORTED)} (default {DEFAULT}); comparison.csv, metrics.json and "
                        "what this command prints are the same in every language")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from image_classifier import runtime
    from image_classifier.report import narrative
    from image_classifier.report.tables import format_terminal_table
    from image_classifier.study.evaluate import EvaluateOptions, run_evaluate

    resolve_device_option(args.device, args.backend)  # no GPU for --device cuda: exit 2 before loading
    runtime.configure()
    options = EvaluateOptions(
        model=args.model_dir, data=args.data, split=args.split, subset=args.subset, out=args.out, seed=args.seed,
        speed=not args.no_speed, invoked_as=shlex.join(["image-classifier", *sys.argv[1:]]), backend=args.backend,
        lang=args.lang, reject=not args.no_reject, unknown=args.unknown, device=args.device,
    )
    study = run_evaluate(options, on_progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_terminal_table(study))
    print()
    print(narrative.headline(study))
    (model,) = study.models
    if model.skipped:
        print(f"{len(model.skipped)} unreadable image(s) skipped: {', '.join(list(model.skipped)[:5])}")
    print(f"backend: {model.backend.name} ({model.backend.reason}); device: "
          f"{study.environment.machine.get('device', 'cpu')}")
    print(calibration_line(model))
    print(f"report: {study.report_path}")
    return 0


def calibration_line(model: ModelResult) -> str:
    """Log-loss and ECE of the calibrated probabilities the model gives, and before calibration."""
    test = model.test
    temperature = model.calibration.temperature if model.calibration is not None else 1.0

    def pair(before: float | None, after: float | None, digits: int) -> str:
        if before is None or after is None:
            return "n/a"
        return f"{before:.{digits}f} -> {after:.{digits}f}"

    if model.calibration is None:
        return "calibration: none (a model saved before calibration, temperature 1)"
    face = (f", face head {model.calibration.face_temperature:.2f}"
            if model.calibration.face_temperature is not None else "")
    return (f"calibration: temperature {temperature:.2f}{face} (fitted on validation); before -> after: "
            f"log-loss {pair(test.log_loss_uncalibrated, test.log_loss, 3)}, "
            f"ECE {pair(test.ece_uncalibrated, test.ece, 3)}")
