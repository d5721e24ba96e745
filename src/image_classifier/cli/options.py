"""Parsing shared by several subcommands' options (the values are checked by the library)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from image_classifier.errors import ImageClassifierError


def parse_arch_path(text: str, *, flag: str = "--weights") -> tuple[str | None, Path]:
    """``ARCH=PATH`` -> (ARCH, PATH); a plain ``PATH`` (or an existing file whose name holds ``=``)
    -> (None, PATH). ``ARCH=`` or ``=PATH`` is an error naming ``flag``."""
    arch, sep, path = text.partition("=")
    if not sep or Path(text).exists():
        return None, Path(text)
    if not arch.strip() or not path:
        raise ImageClassifierError(f"{flag} {text!r}: write ARCH=PATH, e.g. resnet50=weights/resnet50.pth")
    return arch.strip(), Path(path)


# --- --device (issue 15): shared by every command that predicts or trains -------------------------
#: What ``--device`` accepts (image_classifier.device.DEVICE_CHOICES; spelled here so that ``--help``
#: does not import torch).
DEVICE_METAVAR = "{auto,cpu,cuda,cuda:N}"


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """Add the shared ``--device`` option; the value is checked by
    :func:`image_classifier.device.resolve_device` (see :func:`resolve_device_option`)."""
    parser.add_argument(
        "--device", default=default, metavar=DEVICE_METAVAR,
        help="where the network computes: auto (default): the first CUDA GPU when PyTorch sees one, else the "
             "CPU; cpu; cuda or cuda:N: that GPU (an error when there is none)",
    )


def resolve_device_option(device: str, backend: str = "torch") -> Any:
    """``--device`` checked against ``--backend`` before anything heavy is loaded: the
    :class:`torch.device` to compute on, or an :class:`~image_classifier.errors.OptionError` (exit 2)
    for a malformed name, ``cuda`` without a GPU, or an ONNX backend asked to run on a GPU."""
    # Lazy (see image_classifier.cli): resolving a device imports torch, which --help never needs.
    from image_classifier.inference.backends import backend_device

    return backend_device(backend, device)


# --- --keep at prediction time (issue 27): predict, sort, serve ------------------------------------
def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, e.g. 0.9, not {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (exclusive), e.g. 0.9, not {text}")
    return value


def add_keep_argument(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--keep`` option: the "none of these" threshold moved at prediction time."""
    parser.add_argument(
        "--keep", type=_fraction, default=None, metavar="FRACTION",
        help="where the \"none of these\" threshold sits, as the share of the known people's validation photos "
             "it keeps (default: the model's own, 0.95 unless trained with another). Lower answers \"unknown\" "
             "more often: fewer strangers accepted, fewer of your own photos named. What it trades, measured on "
             "validation, is printed beside it. Nothing is refitted.",
    )
