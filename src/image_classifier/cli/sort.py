"""``image-classifier sort MODEL DIR --out OUT``: every photo under a folder answered, into CSV files
and (``--copy``/``--link``) one folder per class (see :mod:`image_classifier.sorting`)."""
from __future__ import annotations

import argparse
import sys

from image_classifier.cli.options import resolve_device_option
from image_classifier.optionspec import add_arguments, from_args
from image_classifier.sorting.options import SortOptions

#: Unreadable files listed by name in the summary (all of them are in OUT/unreadable.csv).
SHOWN_UNREADABLE = 10


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sort",
        help="answer every photo of a folder with a saved model: CSV files, and a folder per class",
        description=(
            "Answer every image under DIR (at any depth) with the model in MODEL (a directory written by "
            "`train`, or a `compare` run directory for its best model) and write OUT/predictions.csv (one row "
            "per photo: path, label or `unknown`, probability, closest class, faces found, the box of the face "
            "that decided, model, content hash), OUT/faces.csv (a face model: one row per face, each face named "
            "or unknown) and OUT/unreadable.csv (files that could not be read, with the reason; never fatal). "
            "With --copy or --link each photo also goes into OUT/<class>/ or OUT/unknown/; the originals are "
            "only read. Run it again with the same OUT to continue after an interruption: photos already "
            "answered (by content hash) are skipped. Several processes or machines: "
            "`torchrun --nproc_per_node=N -m image_classifier sort ...` (each process a share, one CSV)."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="saved model directory (or compare run directory)")
    p.add_argument("data", metavar="DIR", help="the folder of photos to sort")
    add_arguments(p, SortOptions)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    # Lazy (see image_classifier.cli): the sorting workflow loads torch and dlib.
    # The light part first: for a face model the face workers start before PyTorch is imported
    # (seconds on a busy machine), and the model loads while they work (image_classifier.sorting.early).
    from image_classifier.sorting.early import start_faces

    options = from_args(SortOptions, args)
    if args.device not in ("auto", "cpu"):
        resolve_device_option(args.device, args.backend)  # no GPU for --device cuda: exit 2 before any work
    early = start_faces(args.model, args.data, options)
    try:
        from image_classifier.inference.rejection import describe_tradeoff
        from image_classifier.runtime import configure
        from image_classifier.sorting.run import sort_folder
        from image_classifier.units import fmt_seconds

        resolve_device_option(args.device, args.backend)
        configure()
        result = sort_folder(args.model, args.data, options, early=early)
    finally:
        if early is not None:
            early.stream.close()
    if not result.is_main:
        return 0
    print(f"model: {result.model} (backend {result.backend}, device {result.device}"
          + (f", {result.processes} processes" if result.processes > 1 else "") + ")", file=sys.stderr)
    if result.tradeoff is not None:
        print(f"none of these: {describe_tradeoff(result.tradeoff)}", file=sys.stderr)
    width = max((len(k) for k in result.counts), default=5)
    for label, n in result.counts.items():
        print(f"  {label:<{width}}  {n:>6}")
    done = (f"{result.photos} photos answered in {result.out}: {result.answered} now ({result.rate:.1f} photos/s), "
            f"{result.skipped} already done, {result.reused} from a copy with the same content; "
            f"{fmt_seconds(result.seconds)}")
    print(done)
    if result.unreadable:
        print(f"{len(result.unreadable)} file(s) could not be read (listed in {result.out}/unreadable.csv):")
        for path, (reason, _) in list(sorted(result.unreadable.items()))[:SHOWN_UNREADABLE]:
            print(f"  {path}: {reason}")
        if len(result.unreadable) > SHOWN_UNREADABLE:
            print(f"  ... and {len(result.unreadable) - SHOWN_UNREADABLE} more")
    return 0
