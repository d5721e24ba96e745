"""``--backend auto``: the fastest backend for this model, measured on this machine, once.

Which backend wins depends on the CPU (on the project's AMD EPYC, ONNX Runtime runs MobileNetV2 at
batch 1 about 2x faster than eager PyTorch, while for ResNet-50 bf16 PyTorch can tie it; on Intel
CPUs with AMX the ranking changes again), so it is measured, not assumed. The first ``auto`` load
on a machine times every eligible backend at batch 1 (a few seconds, interleaved so load noise
hits all alike), picks the lowest median and records it in ``MODEL_DIR/backend.json``; later loads
read the record. A record is only reused for the same CPU model, core and thread count, library
versions and the same model files (weights, ONNX files, accuracy checks): change any and it is
measured again.

Eligible backends:
- ``torch`` always;
- ``onnx`` when ``model.onnx`` exists (written and verified by ``image-classifier export``).
  Without it auto does *not* export on the fly: export writes a file as large as the weights into
  the model directory (1 GB for the study's simple CNN), verifies it and may be run on a read-only
  or shared directory; serving start-up should not do that silently. Auto says so in its log line
  and names the command to run;
- reduced precision (``torch-bf16``, ``onnx-int8``) only when export measured its accuracy on
  labelled images and it lost at most the allowed number of images (see ``export --eval-data``),
  and bf16 only on CPUs with native bf16; even then it must be at least 10 % faster than the
  fastest fp32 backend to be chosen.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from image_classifier.faces import FaceCache
from image_classifier.fileio import atomic_write_json
from image_classifier.inference import REDUCED_PRECISION
from image_classifier.inference.backends import inference_threads, onnx_path
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.timing import SpeedConfig, measure_classifiers, open_backends
from image_classifier.machine import bf16_supported, load_average, machine_fingerprint
from image_classifier.runs import BACKEND_RECORD_NAME, ONNX_INT8_NAME, ONNX_NAME
from image_classifier.saved_model import ModelCard, read_card

log = logging.getLogger(__name__)

RECORD_VERSION = 1


@dataclass
class BackendChoice:
    name: str
    reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)  # backend -> median bs1 latency
    from_record: bool = False
    skipped: dict[str, str] = field(default_factory=dict)
    #: Measured while other processes kept the CPU busy: used now, measured again next time.
    provisional: bool = False


def _accepted(card: ModelCard, name: str) -> tuple[bool, str]:
    check = card.accuracy_check(name)
    if not check:
        return False, (f"its accuracy was never measured (run `image-classifier export MODEL_DIR "
                       f"{'--quantize int8 ' if name == 'onnx-int8' else ''}--eval-data DATA`)")
    if not check.get("accepted"):
        return False, f"it lost {-check.get('change_images', 0)} of {check.get('images')} images at export"
    return True, ""


def candidates(model_dir: str | os.PathLike, card: ModelCard) -> tuple[list[str], dict[str, str]]:
    """Backends ``auto`` may choose for this model here, and why the others are left out."""
    names = ["torch"]
    skipped: dict[str, str] = {}
    if onnx_path(model_dir, card, "onnx").is_file():
        names.append("onnx")
    else:
        skipped["onnx"] = f"no {ONNX_NAME} (run `image-classifier export {model_dir}`)"
    for name in REDUCED_PRECISION:
        if name == "torch-bf16" and not bf16_supported():
            skipped[name] = "this CPU has no native bfloat16"
            continue
        if name == "onnx-int8" and not onnx_path(model_dir, card, name).is_file():
            skipped[name] = f"no {ONNX_INT8_NAME}"
            continue
        ok, why = _accepted(card, name)
        if ok:
            names.append(name)
        else:
            skipped[name] = why
    return names, skipped


def _model_fingerprint(card: ModelCard, names: list[str]) -> dict[str, Any]:
    exports = card.exports or {}
    return {
        "weights_sha256": card.weights_sha256,
        "onnx_sha256": (exports.get("onnx") or {}).get("sha256"),
        "onnx_int8_sha256": (exports.get("onnx_int8") or {}).get("sha256"),
        "candidates": names,
    }


def _key(machine: dict, model: dict) -> str:
    blob = json.dumps({"machine": machine, "model": model}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_records(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(model_dir) / BACKEND_RECORD_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable %s (%s); measuring again", path, err)
        return {}
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        return {}
    return data.get("records") or {}


def write_record(model_dir: str | os.PathLike, key: str, record: dict[str, Any]) -> bool:
    """Add ``record`` to ``backend.json``; False (and a log line) when the directory is read-only."""
    records = read_records(model_dir)
    records[key] = record
    try:
        atomic_write_json(Path(model_dir) / BACKEND_RECORD_NAME, {"version": RECORD_VERSION, "records": records})
    except OSError as err:
        log.info("could not record the backend choice in %s (%s); it will be measured again next time",
                 model_dir, err)
        return False
    return True


def _busy(load_before: float | None) -> str:
    """Why the CPU counts as busy during a measurement ('' when it did not): the 1-minute load
    average stayed above the number of logical CPUs (more runnable threads than cores, ours
    included) from before to after the measurement."""
    after = load_average()
    if load_before is None or after is None:
        return ""
    cores = os.cpu_count() or 1
    if min(load_before, after) > cores + 0.5:
        return f"load average {load_before:.1f} -> {after:.1f} on {cores} logical CPUs"
    return ""


def _format_timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{n} {t:.1f} ms" for n, t in sorted(timings.items(), key=lambda kv: kv[1]))


#: A reduced-precision backend must beat the fastest fp32 one by this fraction to be chosen: a tie
#: within timing noise is not worth rounding the probabilities.
REDUCED_PRECISION_MARGIN = 0.10


def decide(timings: dict[str, float]) -> str:
    """The backend with the lowest median batch-1 latency, preferring fp32 unless reduced
    precision is clearly (``REDUCED_PRECISION_MARGIN``) faster."""
    best = min(timings, key=timings.__getitem__)
    exact = {n: t for n, t in timings.items() if n not in REDUCED_PRECISION}
    if best in REDUCED_PRECISION and exact:
        best_exact = min(exact, key=exact.__getitem__)
        if exact[best_exact] <= timings[best] * (1 + REDUCED_PRECISION_MARGIN):
            return best_exact
    return best


def choose_backend(model_dir: str | os.PathLike, card: ModelCard | None = None, *, remeasure: bool = False,
                   config: SpeedConfig | None = None, classifiers: dict[str, Classifier] | None = None,
                   threads: int | None = None, face_cache: FaceCache | None = None) -> BackendChoice:
    """Resolve ``auto`` for a saved model: the recorded choice for this machine, or measure now.

    ``classifiers``: already opened classifiers per backend to measure (saves re-opening them);
    on return it also holds every backend that was opened, so the caller can reuse the winner.
    ``threads`` and ``face_cache``: how the backends it has to open are opened (see
    :func:`~image_classifier.inference.classifier.open_classifier`), so that the winner is the
    classifier the caller wants.
    """
    card = card if card is not None else read_card(model_dir)
    names, skipped = candidates(model_dir, card)
    machine = machine_fingerprint(inference_threads())
    model = _model_fingerprint(card, names)
    key = _key(machine, model)
    if len(names) == 1:
        return BackendChoice(names[0], f"the only backend available ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})",
                             skipped=skipped)
    if not remeasure:
        record = read_records(model_dir).get(key)
        if record and record.get("provisional"):
            log.info("the recorded backend choice was measured on a busy CPU: measuring again")
        elif record and record.get("chosen") in names:
            timings = record.get("latency_ms_p50") or {}
            return BackendChoice(
                record["chosen"],
                f"fastest at batch 1 when measured on this machine on {record.get('measured_at', '?')}: "
                f"{_format_timings(timings)} (recorded in {BACKEND_RECORD_NAME})",
                timings, from_record=True, skipped=skipped,
            )
    opened = classifiers if classifiers is not None else {}
    missing = [n for n in names if n not in opened]
    if missing:
        more, failed = open_backends(model_dir, missing, threads=threads, face_cache=face_cache)
        opened.update(more)
        for name, why in failed.items():
            # Auto means "the best that works": a broken ONNX file is reported, torch still serves.
            log.warning("auto backend: leaving out %s: %s", name, why)
            skipped[name] = why
    usable = [n for n in names if n in opened]
    config = config or SpeedConfig(warmup=3, repeats=30, time_budget_s=6.0, min_repeats=8)
    t0 = time.perf_counter()
    load_before = load_average()
    results = measure_classifiers({n: opened[n] for n in usable}, config=config, throughput=False)
    log.debug("measured backends in %.1f s", time.perf_counter() - t0)
    return record_measurement(model_dir, card, results, skipped=skipped, load_before=load_before,
                              how="just measured on this machine")


def record_measurement(model_dir: str | os.PathLike, card: ModelCard, measured: dict[str, dict[str, Any]], *,
                       skipped: dict[str, str], load_before: float | None, how: str,
                       source: str | None = None) -> BackendChoice:
    """Choose from batch-1 timings just taken (``measured``: backend -> figures with
    ``latency_ms_p50``, ``latency_ms_p95`` and ``latency_repeats``) and record the choice in
    ``backend.json``, keyed by this machine and model, for ``auto`` to reuse.

    ``how`` says where the timings come from, in the reason shown to the user.
    """
    names, _ = candidates(model_dir, card)
    timings = {n: r["latency_ms_p50"] for n, r in measured.items()}
    chosen = decide(timings)
    # Other processes competing for the cores distort multi-threaded timings (a runtime whose
    # worker thread is descheduled waits for it): such a choice is used now but not trusted later.
    busy = _busy(load_before)
    if busy:
        log.warning("the CPU was busy while measuring the backends (%s): using %s for now, measuring "
                    "again next time", busy, chosen)
    machine = machine_fingerprint(inference_threads())
    model = _model_fingerprint(card, names)
    record = {
        "chosen": chosen,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine,
        "model": model,
        "latency_ms_p50": timings,
        "latency_ms_p95": {n: r["latency_ms_p95"] for n, r in measured.items()},
        "repeats": {n: r["latency_repeats"] for n, r in measured.items()},
        "skipped": skipped,
        "load_average": load_before,
        "provisional": bool(busy),
    }
    if source:
        record["source"] = source
    write_record(model_dir, _key(machine, model), record)
    reason = f"fastest at batch 1, {how}: {_format_timings(timings)}"
    if busy:
        reason += f" (CPU busy: {busy}; measured again next time)"
    return BackendChoice(chosen, reason, timings, from_record=False, skipped=skipped, provisional=bool(busy))
