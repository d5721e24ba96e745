"""Inference backends: the same loaded model run by eager PyTorch or by ONNX Runtime.

This package's top level is import-light (no torch, no onnxruntime) because CLI parsers use
:data:`BACKENDS` and :func:`add_backend_argument` while building ``--help``. The heavy parts load
on first use:

- :mod:`image_classifier.inference.backends`: ``TorchBackend``, ``OnnxBackend``, ``create_backend``;
- :mod:`image_classifier.inference.selection`: ``choose_backend`` ("auto": fastest measured here);
- :mod:`image_classifier.inference.timing`: ``measure_backends`` (latency/throughput of each backend).
"""
from __future__ import annotations

import argparse
from typing import Any

#: What ``--backend`` / ``load_model(backend=...)`` accept.
#: "auto" picks the fastest backend measured for the model on this machine (measured once, recorded
#: in ``MODEL_DIR/backend.json``). "torch" is eager PyTorch fp32. "torch-bf16" is PyTorch with
#: channels-last and bfloat16 autocast (only where the CPU has native bf16). "onnx" is ONNX Runtime
#: on ``model.onnx`` and "onnx-int8" on ``model.int8.onnx`` (both written by ``image-classifier export``).
BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")

#: Concrete backends ("auto" resolves to one of these).
CONCRETE_BACKENDS = BACKENDS[1:]

#: Backends that compute in reduced precision: "auto" considers them only when their accuracy was
#: checked against fp32 (see :mod:`image_classifier.inference.selection`).
REDUCED_PRECISION = ("torch-bf16", "onnx-int8")

_LAZY = {
    "Backend": "backends",
    "TorchBackend": "backends",
    "OnnxBackend": "backends",
    "create_backend": "backends",
    "BackendChoice": "selection",
    "choose_backend": "selection",
    "available_backends": "selection",
    "machine_fingerprint": "selection",
    "measure_backends": "timing",
}


def add_backend_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """Add the shared ``--backend`` option (same choices and help in every command)."""
    parser.add_argument(
        "--backend", choices=BACKENDS, default=default,
        help=(
            "inference backend: auto = the fastest measured for this model on this machine "
            "(measured once, recorded in MODEL_DIR/backend.json); torch = eager PyTorch fp32; "
            "torch-bf16 = PyTorch bfloat16 + channels-last; onnx / onnx-int8 = ONNX Runtime on the "
            "files written by `image-classifier export` (default: %(default)s)"
        ),
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
