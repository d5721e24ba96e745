"""The ``image-classifier`` command: one entry point, one module per subcommand.

Each subcommand module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` to a ``run(args) -> int`` callable that parses its arguments into the library's options,
calls the library (which checks them) and prints.

Imports: ``--help`` imports every subcommand module, so those import at module level only the
standard library and the light modules (``errors``, ``runs``, ``cli.options``, ``inference``'s
``__init__``); the library itself is imported at the top of each ``run``, the one place in the
package where imports sit inside functions for start-up time. Measured on the 2-core development
machine (busy, best of 3): the whole ``image-classifier --help`` takes 0.1 s (0.07 s of imports),
while importing ``data.split`` or ``data.check`` (Pillow, numpy, OpenCV) takes 0.3 s,
``faces`` (dlib) 0.4 s, and anything that loads torch (``training``, ``inference.loading``,
``export``, ``serve``) 4-6 s.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from image_classifier import __version__
from image_classifier.errors import ImageClassifierError

# Subcommand modules, in the order they are listed in --help.
COMMANDS = (
    "check",
    "group",
    "split",
    "train",
    "predict",
    "sort",
    "add",
    "compare",
    "evaluate",
    "serve",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image-classifier",
        description=(
            "Turn a folder of labelled photos (one sub-folder per class) into trained, honestly "
            "compared image classifiers, and serve the best one."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"image_classifier.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    if os.environ.get("RANK", "0") not in ("", "0") and not args.verbose:
        level = logging.WARNING  # under torchrun, rank 0 alone reports progress
    logging.basicConfig(level=level, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except ImageClassifierError as err:
        print(f"image-classifier {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
