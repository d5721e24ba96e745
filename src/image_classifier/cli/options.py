"""Parsing shared by several subcommands' options (the values are checked by the library)."""
from __future__ import annotations

from typing import Any


def resolve_device_option(device: str, backend: str = "torch") -> Any:
    """``--device`` checked against ``--backend`` before anything heavy is loaded: the
    :class:`torch.device` to compute on, or an :class:`~image_classifier.errors.OptionError` (exit 2)
    for a malformed name, ``cuda`` without a GPU, or an ONNX backend asked to run on a GPU."""
    # Lazy (see image_classifier.cli): resolving a device imports torch, which --help never needs.
    from image_classifier.inference.backends import backend_device

    return backend_device(backend, device)
