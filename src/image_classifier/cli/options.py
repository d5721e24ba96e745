"""Parsing shared by several subcommands' options (the values are checked by the library)."""
from __future__ import annotations

import argparse
from pathlib import Path

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


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda|cuda:N`` (checked by :func:`image_classifier.device.resolve_device`)."""
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="auto (default): the first CUDA GPU when PyTorch sees one, else the CPU; "
                             "or cpu, cuda, cuda:N")
