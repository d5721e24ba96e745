"""The comparison table: its columns (``comparison.csv``, :attr:`Study.table`) and one model's row.

pandas is optional: the tables are DataFrames when it is installed, lists of dicts otherwise.
"""
from __future__ import annotations

import math
from typing import Any

from image_classifier.results.schema import CandidateEvidence, ModelResult, Speed

_UNLOADED: Any = object()
#: pandas (optional: the tables are DataFrames when it is installed, lists of dicts otherwise), imported
#: on first use by :func:`_pandas`: ``image-classifier --help`` imports this module, and importing pandas
#: here made it take 0.47 s instead of 0.1 s (2-core development machine, median of 5).
pandas: Any = _UNLOADED


def _pandas() -> Any:
    """The pandas module, or None when it is not installed."""
    global pandas
    if pandas is _UNLOADED:
        try:
            import pandas as module
        except ImportError:  # pragma: no cover - depends on the environment
            module = None
        pandas = module
    return pandas

#: ``comparison.csv`` columns (and :attr:`Study.table`'s), in order. The first 13 are the ones the
#: study's question needs; the rest add context.
COLUMNS = (
    "model",
    "test_accuracy",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "macro_f1",
    "log_loss",
    "ece",
    # log_loss and ece are those of the calibrated probabilities (what the model serves); these are
    # before calibration, with the temperature fitted on the validation split (empty: none).
    "log_loss_uncalibrated",
    "ece_uncalibrated",
    "temperature",
    "params",
    "size_mb",
    "latency_ms_p50",
    "latency_ms_p95",
    "throughput_ips",
    "train_seconds",
    "test_n",
    "val_accuracy",
    "val_loss",
    "best_epoch",
    "trainable_params",
    "gflops_per_image",
    "e2e_latency_ms_p50",
    "e2e_latency_ms_p95",
    "peak_rss_mb",
    "selected",
    # Inference backends (``compare``): ONNX Runtime timed against eager PyTorch in the same rounds;
    # empty when the model was not exported.
    "onnx_latency_ms_p50",
    "onnx_e2e_latency_ms_p50",
    "onnx_throughput_ips",
    "onnx_speedup",
    "serve_backend",
    # Photos of people (``compare`` with the face survey on): test accuracy on the test images in
    # which a face was found and on the others, and the share of test images with a face.
    "test_accuracy_face",
    "test_accuracy_noface",
    "face_detection_rate",
    # "cnn", or "face" for a face model, whose latency_ms_* are those of its no-face fallback network
    # alone (see report.tables.per_image_ms), or "ensemble" for compare's ensemble (every member's
    # forward pass; size and parameters are the members' sums).
    "family",
    # Whether latency_ms_* (the forward pass) is all the model computes per image; False for a face
    # model and an ensemble with one (dlib's faces come first), whose cost per image is e2e_latency_ms_*.
    "forward_is_whole",
    # The shortcut audit (``compare``): test accuracy with the faces masked, with only the faces
    # kept (both on the test images with a face found), and in greyscale.
    "acc_face_masked",
    "acc_face_only",
    "acc_greyscale",
    # "None of these" (open-set rejection, see OpenSet): AUROC of the rejection score, known test images
    # against unknown ones; the share of unknown images accepted as a class at the validation
    # threshold; accuracy on the known test images the rule keeps, and the share it keeps.
    "unknown_auroc",
    "unknown_accept_rate",
    "known_accuracy_kept",
    "known_kept_rate",
    "unknown_method",
    # The choice of the served model (compare; evaluate.choice), on the training and validation
    # images only: out-of-fold accuracy and log-loss over train + validation for a model refitted in
    # seconds (mean and standard deviation over repeats x folds, e.g. "5x2"), the share of strangers
    # its rule accepts on validation (a folder of people), and whether no eligible candidate is more
    # accurate beyond the noise ("tied": it was among those the rule chose from).
    "cv_accuracy",
    "cv_accuracy_std",
    "cv_log_loss",
    "cv_folds",
    "val_strangers_accepted",
    "tied",
)

#: The columns a notebook shows (:meth:`Study._repr_html_`); the table has them all.
NOTEBOOK_COLUMNS = ("model", "val_accuracy", "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high",
                    "macro_f1", "params", "size_mb", "latency_ms_p50", "train_seconds", "selected")


def model_row(m: ModelResult, selected: bool = False, evidence: CandidateEvidence | None = None) -> dict[str, Any]:
    """The row of model ``m`` in the comparison table: keys = :data:`COLUMNS`, numbers unrounded
    (``evidence``: its candidate's in the run's choice, when it was one)."""
    test, speed, val, training = m.test, m.speed or Speed(), m.validation, m.training
    ev = evidence
    onnx = (m.backends.backends.get("onnx") if m.backends else None) or {}
    faces = m.faces
    return {
        "model": m.name,
        "test_accuracy": test.accuracy,
        "test_accuracy_ci_low": test.accuracy_ci[0],
        "test_accuracy_ci_high": test.accuracy_ci[1],
        "macro_f1": test.macro_f1,
        "log_loss": test.log_loss,
        "ece": test.ece,
        "log_loss_uncalibrated": test.log_loss_uncalibrated,
        "ece_uncalibrated": test.ece_uncalibrated,
        "temperature": m.calibration.temperature if m.calibration else None,
        "params": speed.params,
        "size_mb": speed.size_mb,
        "latency_ms_p50": speed.latency_ms_p50,
        "latency_ms_p95": speed.latency_ms_p95,
        "throughput_ips": speed.throughput_ips,
        "train_seconds": training.seconds,
        "test_n": test.n,
        "val_accuracy": val.accuracy,
        "val_loss": val.loss,
        "best_epoch": val.best_epoch,
        "trainable_params": speed.trainable_params,
        "gflops_per_image": speed.flops_per_image / 1e9 if speed.flops_per_image is not None else None,
        "e2e_latency_ms_p50": speed.e2e_latency_ms_p50,
        "e2e_latency_ms_p95": speed.e2e_latency_ms_p95,
        "peak_rss_mb": training.peak_rss_mb,
        "selected": selected,
        "onnx_latency_ms_p50": onnx.get("latency_ms_p50"),
        "onnx_e2e_latency_ms_p50": onnx.get("e2e_latency_ms_p50"),
        "onnx_throughput_ips": onnx.get("throughput_ips"),
        "onnx_speedup": onnx.get("speedup_latency"),
        "serve_backend": m.backends.serve_backend.name if m.backends else None,
        "test_accuracy_face": faces.test_accuracy_face if faces else None,
        "test_accuracy_noface": faces.test_accuracy_noface if faces else None,
        "face_detection_rate": faces.detection_rate if faces else None,
        "family": m.family or "cnn",
        "forward_is_whole": speed.forward_is_whole,
        "acc_face_masked": m.shortcut.face_masked if m.shortcut else None,
        "acc_face_only": m.shortcut.face_only if m.shortcut else None,
        "acc_greyscale": m.shortcut.greyscale if m.shortcut else None,
        "unknown_auroc": m.open_set.auroc if m.open_set else None,
        "unknown_accept_rate": m.open_set.unknown_accept_rate if m.open_set else None,
        "known_accuracy_kept": m.open_set.known_accuracy_kept if m.open_set else None,
        "known_kept_rate": m.open_set.known_kept_rate if m.open_set else None,
        "unknown_method": m.open_set.method if m.open_set else None,
        "cv_accuracy": ev.cv_accuracy if ev else None,
        "cv_accuracy_std": ev.cv_accuracy_std if ev else None,
        "cv_log_loss": ev.cv_log_loss if ev else None,
        "cv_folds": f"{ev.cv_repeats}x{ev.cv_folds}" if ev and ev.cv_repeats else None,
        "val_strangers_accepted": ev.strangers_accepted if ev else None,
        "tied": ev.tied if ev else None,
    }


def cell(value: Any) -> str:
    """A value as a notebook's table shows it."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "*" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

