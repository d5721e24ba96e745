"""Parsing shared by several subcommands' options (the values are checked by the library)."""
from __future__ import annotations

import argparse
from typing import Any

from image_classifier.optionspec import DEVICE_HELP, DEVICE_METAVAR, KEEP_HELP, keep_argument


# --- --device (issue 15): shared by every command that predicts or trains -------------------------
def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """Add the shared ``--device`` option; the value is checked by
    :func:`image_classifier.device.resolve_device` (see :func:`resolve_device_option`)."""
    parser.add_argument("--device", default=default, metavar=DEVICE_METAVAR, help=DEVICE_HELP)


def resolve_device_option(device: str, backend: str = "torch") -> Any:
    """``--device`` checked against ``--backend`` before anything heavy is loaded: the
    :class:`torch.device` to compute on, or an :class:`~image_classifier.errors.OptionError` (exit 2)
    for a malformed name, ``cuda`` without a GPU, or an ONNX backend asked to run on a GPU."""
    # Lazy (see image_classifier.cli): resolving a device imports torch, which --help never needs.
    from image_classifier.inference.backends import backend_device

    return backend_device(backend, device)


# --- --keep at prediction time (issue 27): predict, serve (sort's is SortOptions.keep) ---------------
def add_keep_argument(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--keep`` option: the "none of these" threshold moved at prediction time."""
    parser.add_argument("--keep", type=keep_argument, default=None, metavar="FRACTION", help=KEEP_HELP)
