"""Static int8 quantization with ONNX Runtime, and what it costs in accuracy.

Static (not dynamic) quantization: activations' ranges are measured once on calibration images
(training images: the ranges the network really sees) and baked in, so no range is computed per
request. QDQ format, int8 weights per output channel, uint8 activations: the combination ORT's
x86 kernels (VNNI) run fastest and that keeps depthwise convolutions (MobileNetV2) accurate.

An int8 model is never accepted on faith: :func:`accuracy_change` counts, on labelled images the
calibration did not see, how many the int8 model gets right compared with fp32.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from image_classifier.inference.backends import ONNX_INPUT
from image_classifier.inference.onnx_metadata import set_metadata


class _BatchReader(CalibrationDataReader):
    """Feeds the preprocessed calibration batches to ORT's calibrator, one at a time."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str) -> None:
        self._batches = batches
        self._input_name = input_name
        self._iter: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration_batches: Sequence[np.ndarray], *, metadata: dict[str, str] | None = None,
                  per_channel: bool = True) -> Path:
    """Write an int8 (QDQ) version of the ONNX file ``fp32_path`` to ``out_path`` atomically.

    ``calibration_batches``: preprocessed float32 (N, 3, H, W) arrays of training images.
    """
    if not calibration_batches:
        raise ValueError("int8 quantization needs calibration images")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".quantize.") as tmp_dir:
        tmp = Path(tmp_dir)
        # Shape inference + graph optimisation first (fuses Conv+BN+ReLU so each fused op gets one
        # quantization range): ORT's recommended pre-processing step.
        prepared = tmp / "prepared.onnx"
        # ORT prints progress ("Performing symbolic shape inference...") to stdout: keep the
        # command's output to the results.
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        quantized = tmp / "int8.onnx"
        quantize_static(
            str(prepared), str(quantized), _BatchReader(calibration_batches, ONNX_INPUT),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # The softmax at the end is cheap and its output must stay a float probability.
            op_types_to_quantize=["Conv", "MatMul", "Gemm", "Add", "Relu", "Clip", "MaxPool",
                                  "GlobalAveragePool", "Flatten", "Reshape"],
        )
        model = onnx.load(str(quantized))
        if metadata:
            set_metadata(model, metadata)
        final = tmp / "final.onnx"
        onnx.save(model, str(final))
        os.chmod(final, 0o644)
        os.replace(final, out_path)
    return out_path


def accuracy_change(reference: Any, candidate: Any, batches: Sequence[np.ndarray],
                    labels: Sequence[int]) -> dict[str, Any]:
    """How many of the labelled images each backend gets right (``predict_tensor`` on the same
    preprocessed ``batches``), and how far their probabilities are apart."""
    labels_arr = np.asarray(labels)
    ref = np.concatenate([reference.predict_tensor(b) for b in batches])
    got = np.concatenate([candidate.predict_tensor(b) for b in batches])
    if len(ref) != len(labels_arr):
        raise ValueError(f"{len(ref)} predictions for {len(labels_arr)} labels")
    correct_ref = int((ref.argmax(1) == labels_arr).sum())
    correct_got = int((got.argmax(1) == labels_arr).sum())
    n = int(len(labels_arr))
    return {
        "images": n,
        "correct_fp32": correct_ref,
        "correct": correct_got,
        "accuracy_fp32": correct_ref / n if n else None,
        "accuracy": correct_got / n if n else None,
        "change_images": correct_got - correct_ref,
        "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))) if n else None,
        "max_abs_diff": float(np.abs(ref - got).max()) if n else None,
    }
