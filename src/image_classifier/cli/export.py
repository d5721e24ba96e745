"""``image-classifier export MODEL_DIR``: write model.onnx (verified against PyTorch) beside a saved model."""
from __future__ import annotations

import argparse
from pathlib import Path

from image_classifier.export.options import ExportOptions
from image_classifier.optionspec import add_arguments, from_args
from image_classifier.runs import ONNX_NAME


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX (verified), optionally int8, and pick the fastest backend",
        description=(
            f"Write MODEL_DIR/{ONNX_NAME} (dynamic batch, softmax output, class names and preprocessing in "
            "its metadata), verify that ONNX Runtime's probabilities match PyTorch's (max abs diff <= 1e-4 "
            "on real or synthetic images), record it in the model card, then measure the inference "
            "backends on this machine and record the fastest, which `predict`, `evaluate` and `serve` "
            "use with --backend auto."
        ),
    )
    p.add_argument("model_dir", type=Path, help="a saved model directory (from `image-classifier train`)")
    add_arguments(p, ExportOptions)
    p.set_defaults(func=run)


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def run(args: argparse.Namespace) -> int:
    options = from_args(ExportOptions, args)  # a bad option: exit 2 before anything loads
    # Lazy (see image_classifier.cli): export loads torch and ONNX.
    from image_classifier import runtime

    runtime.configure()
    from image_classifier.export.pipeline import export_model

    result = export_model(args.model_dir, options)
    par = result.parity
    print(f"wrote {result.onnx_path} ({result.size_bytes / 1e6:.1f} MB, opset {options.opset}, "
          f"{result.graph['nodes']} nodes, dynamic batch) in {result.seconds:.1f} s")
    print(f"verified against PyTorch on {par.image_source}: max abs diff {par.max_abs_diff:.2e} "
          f"(limit {par.tolerance:.0e}), top-1 agreement {par.top1_agreement:.0%}, batch sizes "
          f"{', '.join(map(str, par.batch_sizes))}")
    if result.int8:
        print(f"wrote {result.onnx_path.parent / result.int8['file']} ({result.int8['size_bytes'] / 1e6:.1f} MB, "
              f"calibrated on {result.int8['calibration']['images']} images)")
    for name, check in result.accuracy_checks.items():
        verdict = "accepted" if check["accepted"] else f"NOT used by --backend auto (limit: {check['max_drop_images']} images)"
        print(f"accuracy {name} vs PyTorch fp32 on {check['eval_source']}: {check['correct']}/{check['images']} "
              f"vs {check['correct_fp32']}/{check['images']} ({check['change_images']:+d} images, "
              f"top-1 agreement {check['top1_agreement']:.1%}, max abs diff {check['max_abs_diff']:.1e}): {verdict}")
    if result.choice is not None:
        c = result.choice
        timings = ", ".join(f"{n} {_fmt_ms(t)}" for n, t in sorted(c.timings_ms.items(), key=lambda kv: kv[1]))
        print(f"backend for --backend auto on this machine: {c.name} (median batch-1 latency: {timings or c.reason})")
        if c.provisional:
            print("  measured while other processes kept the CPU busy: it will be measured again on next use")
        for name, why in c.skipped.items():
            print(f"  not considered: {name}: {why}")
    return 0
