"""``image-classifier compare DATA``: the whole study in one command (see image_classifier.study.comparison)."""
from __future__ import annotations

import argparse
import shlex
import sys

from image_classifier.optionspec import add_arguments, from_args
from image_classifier.runs import COMPARISON_CSV_NAME, METRICS_NAME, REPORT_HTML_NAME, REPORT_MD_NAME
from image_classifier.study.options import CompareOptions


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train several architectures on one split, evaluate them on the test split, write a report",
        description=(
            "Audit DATA, make (or reuse) one train/val/test split, train every model on it, choose the model "
            "to serve on the training and validation images (accuracy with its noise, and for photos of "
            "people turning strangers away), evaluate every model once on the test split (accuracy with 95%% "
            "Wilson CI, macro-F1, log-loss, calibration, McNemar tests), measure size and speed on "
            f"this machine, and write OUT/{REPORT_HTML_NAME}, {REPORT_MD_NAME}, {COMPARISON_CSV_NAME}, "
            f"{METRICS_NAME}."
        ),
    )
    add_arguments(p, CompareOptions)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from image_classifier import runtime
    from image_classifier.report import narrative
    from image_classifier.report.tables import format_terminal_table
    from image_classifier.runs import BEST_NAME
    from image_classifier.study.comparison import run_compare

    runtime.configure()
    options = from_args(CompareOptions, args, invoked_as=shlex.join(["image-classifier", *sys.argv[1:]]))
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
