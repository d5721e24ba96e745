"""``compare``'s inference-backend step: export each trained model to ONNX, time eager PyTorch
against ONNX Runtime on this machine, and record which one ``serve`` will run by default.

Why it is part of the study: which backend is faster depends on the architecture and the CPU, so
the report shows measured figures per model, and the measurement is recorded in the model's
``backend.json`` so that ``serve runs/NAME`` (``--backend auto``) starts on the fastest backend
without measuring again.

Large models are not exported: the ONNX file is as big as the fp32 weights, and exporting a
244 M-parameter network (the study's simple CNN) writes about 1 GB and needs several GB of RAM,
which is not worth it for a model that eager PyTorch serves just as well.
"""
from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any

from image_classifier.errors import ImageClassifierError
from image_classifier.evaluate.speed import SpeedConfig
from image_classifier.export.pipeline import ExportOptions, export_model
from image_classifier.inference import selection
from image_classifier.inference.timing import measure_backends
from image_classifier.machine import load_average
from image_classifier.results import BackendComparison, ExportInfo, ServeChoice, Speed
from image_classifier.saved_model import read_card

log = logging.getLogger(__name__)

#: Models with more parameters than this are not exported by ``compare``.
MAX_EXPORT_PARAMS = 100_000_000
#: The backends ``compare`` times against each other.
COMPARED_BACKENDS = ("torch", "onnx")


def export_for_serving(model_dir: str | os.PathLike, params: int | None, *, enabled: bool = True,
                       max_params: int = MAX_EXPORT_PARAMS) -> ExportInfo:
    """Export ``model.onnx`` (verified against PyTorch) unless disabled or the model is too big."""
    estimated = 4 * int(params) if params is not None else None
    if not enabled:
        return ExportInfo(False, "not exported (--no-export)", estimated_size_bytes=estimated)
    if params is not None and params > max_params:
        return ExportInfo(False, f"not exported ({estimated / 1e6:.0f} MB ONNX file for {params / 1e6:.0f} M "
                                 f"parameters, above the {max_params / 1e6:.0f} M limit)",
                          estimated_size_bytes=estimated)
    t0 = time.perf_counter()
    try:
        # measure=False: the backends are timed below with the study's own repeat counts.
        result = export_model(model_dir, ExportOptions(measure=False))
    except ImageClassifierError as err:
        # A failed export leaves nothing behind (the pipeline publishes only verified files): the
        # model is still served by PyTorch, and the report says why.
        log.warning("%s: ONNX export failed: %s", model_dir, err)
        return ExportInfo(False, f"export failed: {err}", estimated_size_bytes=estimated,
                          seconds=time.perf_counter() - t0)
    return ExportInfo(True, "", onnx_size_bytes=result.size_bytes, estimated_size_bytes=estimated,
                      seconds=time.perf_counter() - t0, max_abs_diff_vs_torch=result.parity.max_abs_diff)


def _torch_only(speed: Speed) -> dict[str, Any]:
    """The eager-PyTorch figures ``measure_classifier`` already took (for a model not exported)."""
    return {"latency_ms_p50": speed.latency_ms_p50, "latency_ms_p95": speed.latency_ms_p95,
            "latency_repeats": speed.latency_repeats, "e2e_latency_ms_p50": speed.e2e_latency_ms_p50,
            "e2e_latency_ms_p95": speed.e2e_latency_ms_p95, "throughput_ips": speed.throughput_ips,
            "throughput_batch": speed.throughput_batch, "description": speed.backend_description,
            "speedup_latency": 1.0, "speedup_e2e": 1.0, "speedup_throughput": 1.0}


def record_serving_choice(model_dir: str | os.PathLike, measured: dict[str, dict],
                          load_before: float | None) -> Any:
    """Record the batch-1 medians just measured as ``auto``'s choice (``backend.json``, which
    ``serve``'s ``--backend auto`` reads), when they cover every backend ``auto`` may choose here;
    otherwise resolve ``auto`` exactly as ``serve`` does.

    Returns the :class:`~image_classifier.inference.selection.BackendChoice` ``serve`` will make.
    """
    card = read_card(model_dir)
    names, skipped = selection.candidates(model_dir, card)
    if len(names) > 1 and all(n in measured for n in names):
        return selection.record_measurement(
            model_dir, card, {n: measured[n] for n in names}, skipped=skipped, load_before=load_before,
            how="in compare's measurement on this machine", source="image-classifier compare")
    # One candidate only: resolve "auto" exactly as serve does.
    return selection.choose_backend(model_dir, card)


def measure_model_backends(model_dir: str | os.PathLike, speed: Speed, *, export: bool = True,
                           sample_image: str | os.PathLike | None = None,
                           config: SpeedConfig | None = None) -> tuple[BackendComparison, float]:
    """Export (see :func:`export_for_serving`) and time torch vs onnx for one saved model.

    Returns the comparison and the seconds the timing took (the export's are in it).
    """
    exp = export_for_serving(model_dir, speed.params, enabled=export)
    t0 = time.perf_counter()
    load_before = load_average()
    if exp.exported:
        measured = measure_backends(model_dir, list(COMPARED_BACKENDS), sample_image=sample_image, config=config)
        backends, skipped, fastest = measured["backends"], dict(measured["skipped"]), measured["fastest"]
    else:
        # Only PyTorch can run it: its figures were just measured, no need to time it twice.
        backends = {"torch": _torch_only(speed)}
        skipped, fastest = {"onnx": exp.reason}, "torch"
    measure_seconds = time.perf_counter() - t0
    # The classifiers opened for the measurement hold reference cycles (backend <-> module loader):
    # collect them now, so this model's weights and ONNX Runtime session are freed before the next
    # (possibly much larger) model is loaded.
    gc.collect()
    choice = record_serving_choice(model_dir, backends, load_before)
    log.info("%s: serve will use %s (%s)", model_dir, choice.name, choice.reason)
    return BackendComparison(backends, exp, skipped, fastest,
                             ServeChoice(choice.name, choice.reason, choice.provisional)), measure_seconds
