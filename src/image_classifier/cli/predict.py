"""``image-classifier predict DIR IMAGE...``: class probabilities from a saved model (see
:func:`image_classifier.inference.files.predict_files`)."""
from __future__ import annotations

import argparse
import json
import sys

from image_classifier import load_model  # light: inference loads on the call
from image_classifier.errors import ImageClassifierError
from image_classifier.cli.options import resolve_device_option
from image_classifier.inference.options import PredictOptions
from image_classifier.optionspec import add_arguments, from_args
from image_classifier.runs import resolve_model_dir


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="classify images with a saved model",
        description=(
            "Print the most probable classes of each IMAGE according to the model in DIR (a "
            "directory written by `train`, or a `compare` run directory, which means its best "
            "model). An IMAGE may be a folder: every file under it, at any depth (`sort` writes "
            "the answers to CSV files and class folders). An image that cannot be read is reported "
            "on its own line and the others are still classified; the exit status is then 1."
        ),
    )
    p.add_argument("model", metavar="DIR", help="saved model directory (or compare run directory)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (JPEG, PNG, WebP, ...) or folders of them")
    add_arguments(p, PredictOptions)
    p.add_argument("--json", action="store_true", help="print JSON: every class's probability per image")
    p.set_defaults(func=run)
    return p


def _decided_by(result: dict) -> str:
    """For a face model: which face answered (box in the image's pixels), or that none was found."""
    if "face" not in result:
        return ""
    faces = result.get("faces") or []
    named = ""
    if len(faces) > 1:  # a group photo: every face's own answer, largest first
        named = "; faces: " + ", ".join(f["label"] or "?" for f in faces)
    if result["face"] is None:
        if result.get("faces_found"):
            return (f"  (none of the {result['faces_found']} faces found is like a known person's: whole-image "
                    f"fallback{named})")
        if result.get("unknown") and result.get("picture_distance") is not None:  # the picture decided it
            return "  (no face found, and the picture is unlike every training photo)"
        return "  (no face found: whole-image fallback)"
    x0, y0, x1, y1 = (round(v) for v in result["face"])
    return f"  (face at {x0},{y0}-{x1},{y1}, {result['face_method']}{named})"


def _answer(result: dict) -> str:
    """The top classes with their probabilities or, for an image like none of the classes,
    ``unknown (closest: X, 41 %)``."""
    if result.get("unknown"):
        closest = result["closest"]
        return f"unknown (closest: {closest['label']}, {100 * closest['probability']:.0f} %)"
    return "  ".join(f"{t['label']} {t['probability']:.3f}" for t in result["top"])


def run(args: argparse.Namespace) -> int:
    # Lazy (see image_classifier.cli): numpy, Pillow, torch, which --help never needs.
    from image_classifier.inference.files import predict_files
    from image_classifier.inference.rejection import describe_tradeoff
    from image_classifier.runtime import configure

    options = from_args(PredictOptions, args)  # checked before the model loads
    device = resolve_device_option(options.device, options.backend)  # so is --device (no GPU: exit 2)

    configure()
    model_dir = resolve_model_dir(args.model)
    try:
        classifier = load_model(model_dir, backend=options.backend, reject=options.reject, device=device)
    except ValueError as err:  # unknown backend
        raise ImageClassifierError(str(err)) from None
    if options.keep is not None:
        classifier = classifier.with_keep(options.keep)
    # stderr, so that --json output stays machine-readable.
    print(f"backend: {classifier.backend_name} ({classifier.backend_reason}); device: {classifier.device}",
          file=sys.stderr)
    trade = classifier.tradeoff() if classifier.reject else None
    if trade is not None:
        print(f"none of these: {describe_tradeoff(trade)}", file=sys.stderr)

    results = predict_files(classifier, args.images, options)
    failed = sum(1 for r in results if "error" in r)
    if args.json:
        json.dump({"model": str(model_dir), "architecture": classifier.card.architecture,
                   "backend": classifier.backend_name, "device": str(classifier.device),
                   "classes": classifier.classes, "predictions": results}, sys.stdout, indent=2)
        print()
    else:
        width = max(len(r["image"]) for r in results)
        for r in results:
            if "error" in r:
                print(f"{r['image']:<{width}}  error: {r['error']}")
            else:
                print(f"{r['image']:<{width}}  {_answer(r)}{_decided_by(r)}")
    if failed:
        print(f"{failed} of {len(results)} image(s) could not be read", file=sys.stderr)
        return 1
    return 0
