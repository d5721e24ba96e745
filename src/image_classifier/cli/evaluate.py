"""``image-classifier evaluate MODEL_DIR DATA``: the compare report's metrics and plots for one model."""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING

from image_classifier.cli.options import resolve_device_option
from image_classifier.optionspec import add_arguments, from_args
from image_classifier.study.options import EvaluateOptions

if TYPE_CHECKING:  # the parser stays light: results are read only when a run is evaluated
    from image_classifier.results import ModelResult


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate one saved model on a folder of labelled images (metrics, plots, report)",
        description=(
            "Score a saved model (a model directory, or a compare run directory: its best model) on DATA, "
            "one sub-folder per class: accuracy with 95%% Wilson CI, macro-F1, per-class "
            "precision/recall/F1, log-loss, calibration (ECE), confusion matrix, misclassified images, "
            "size and speed on this machine. With --split, only the images of one subset of that "
            "manifest are scored (e.g. the test split the model never saw). Class folders the model "
            "does not know are an error; classes missing from DATA are fine."
        ),
    )
    add_arguments(p, EvaluateOptions)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from image_classifier import runtime
    from image_classifier.report import narrative
    from image_classifier.report.tables import format_terminal_table
    from image_classifier.study.evaluate import run_evaluate

    options = from_args(EvaluateOptions, args, invoked_as=shlex.join(["image-classifier", *sys.argv[1:]])).check()
    resolve_device_option(options.device, options.backend)  # no GPU for --device cuda: exit 2 before loading
    runtime.configure()
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
    parts = "".join(f", {part} head {value:.2f}" for part, value in model.calibration.part_temperatures().items())
    return (f"calibration: temperature {temperature:.2f}{parts} (fitted on validation); before -> after: "
            f"log-loss {pair(test.log_loss_uncalibrated, test.log_loss, 3)}, "
            f"ECE {pair(test.ece_uncalibrated, test.ece, 3)}")
