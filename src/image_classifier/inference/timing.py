"""Measuring backends against each other on this machine, fairly.

Backends are timed *interleaved*: each round lets every backend in turn run untimed until the
previous runtime's threads have gone quiet, then times a few calls in a row, so a burst of load
from another process hits all of them alike instead of whichever happened to be running. Figures
are medians (and 95th percentiles) of wall time after untimed warm-up calls.

Three figures per backend, as the issue asks:
- model only, batch 1: ``predict_tensor`` on a ready normalised tensor (softmax included);
- end to end, batch 1: image file -> probabilities (read, decode with JPEG draft mode, one resize,
  normalise, forward), when a sample image is given;
- throughput at batch ``config.throughput_batch`` (images per second).

The primitives (:class:`SpeedConfig`, :func:`time_calls`, :func:`latency_summary`) also serve
:mod:`image_classifier.evaluate.speed`, which sits above this package and imports them from here.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from image_classifier.errors import ImageClassifierError
from image_classifier.faces import FaceCache
from image_classifier.inference.backends import inference_threads
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.kinds import open_classifier
from image_classifier.machine import bf16_supported, machine_fingerprint

log = logging.getLogger(__name__)

BASELINE = "torch"


@dataclass
class SpeedConfig:
    """Repeat counts. The defaults give stable medians in a few seconds per model on 2 cores;
    tests pass tiny values."""

    warmup: int = 5
    repeats: int = 50
    e2e_repeats: int = 30
    throughput_batch: int = 32
    throughput_repeats: int = 5
    #: Stop a latency loop early once it has run this long (seconds) and has at least
    #: ``min_repeats`` samples, so a slow model (AlexNet-like at bs 1) cannot stall the study.
    time_budget_s: float = 20.0
    min_repeats: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


def time_calls(
    fn: Callable[[], Any], *, warmup: int, repeats: int, time_budget_s: float = float("inf"),
    min_repeats: int = 1,
) -> np.ndarray:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if i + 1 >= min_repeats and time.perf_counter() - start > time_budget_s:
            log.debug("time budget reached after %d of %d repeats", i + 1, repeats)
            break
    return np.asarray(times)


def latency_summary(seconds: np.ndarray) -> dict:
    """Median, 95th percentile and mean in milliseconds, and the number of samples."""
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "repeats": int(ms.size),
    }


#: Untimed calls a backend makes, for at least this long, before its timed calls in a round.
SETTLE_S = 0.05
#: Timed calls in a row per backend and round.
BLOCK = 5


def interleaved_times(fns: dict[str, Callable[[], Any]], *, warmup: int, repeats: int,
                      time_budget_s: float = float("inf"), min_repeats: int = 1,
                      settle_s: float = SETTLE_S, block: int = BLOCK) -> dict[str, np.ndarray]:
    """Seconds per call of each function (``repeats`` samples each), measured in rounds: in each
    round every function in turn makes untimed calls for ``settle_s`` seconds, then ``block``
    timed calls in a row.

    Why settle by time: after a call, PyTorch's OpenMP threads and each ONNX Runtime session's
    pool keep spinning for a while, and another runtime's next calls compete with them for the
    cores, which never happens in a server running one backend. Measured on 2 cores with
    MobileNetV2, one untimed call per round left ONNX Runtime int8 at 5.9 ms against 1.3 ms when
    timed alone; 50 ms of untimed calls brings every backend to within noise of its figure alone.
    A function whose calls already take longer than ``settle_s`` needs no settling calls.
    Rounds still alternate the functions, so a burst of load from another process hits all alike.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    last: dict[str, float] = {name: 0.0 for name in fns}
    block = max(1, block)
    start = time.perf_counter()
    done = 0
    while done < repeats:
        n = min(block, repeats - done)
        for name, fn in fns.items():
            if len(fns) > 1 and last[name] < settle_s:
                settle_until = time.perf_counter() + settle_s
                while time.perf_counter() < settle_until:
                    fn()
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                last[name] = time.perf_counter() - t0
                times[name].append(last[name])
        done += n
        if done >= min_repeats and time.perf_counter() - start > time_budget_s:
            log.debug("time budget reached after %d of %d calls each", done, repeats)
            break
    return {name: np.asarray(ts) for name, ts in times.items()}


def open_backends(model_dir: str | os.PathLike, names: Sequence[str], *, threads: int | None = None,
                  face_cache: FaceCache | None = None) -> tuple[dict[str, Classifier], dict[str, str]]:
    """Load the model once and give a :class:`~image_classifier.inference.classifier.Classifier` per
    backend (sharing the PyTorch module and the preprocessing; ``threads`` and ``face_cache`` as in
    :func:`~image_classifier.inference.classifier.open_classifier`). Backends that cannot be opened
    (no exported file, a corrupted one) are returned in the second dict with the reason."""
    base = open_classifier(model_dir, "torch", threads=threads, face_cache=face_cache)
    classifiers: dict[str, Classifier] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name == "torch":
            classifiers[name] = base
            continue
        try:
            classifiers[name] = base.with_backend(name, threads=threads)
        except ImageClassifierError as err:
            skipped[name] = str(err)
    return classifiers, skipped


def measure_classifiers(classifiers: dict[str, Classifier], *, sample_image: str | os.PathLike | None = None,
                        config: SpeedConfig | None = None, throughput: bool = True) -> dict[str, dict]:
    """Latency (model only and end to end) and throughput of already loaded classifiers."""
    config = config or SpeedConfig()
    if not classifiers:
        return {}
    any_clf = next(iter(classifiers.values()))
    one = any_clf.preprocess([Image.new("RGB", (64, 48), (127, 127, 127))])
    # A little noise so the probabilities compared below are not those of a flat grey picture.
    one = one + 0.1 * torch.from_numpy(np.random.default_rng(0).standard_normal(one.shape).astype(np.float32))
    ref = classifiers[BASELINE].predict_tensor(one) if BASELINE in classifiers else None

    results: dict[str, dict] = {}
    lat = interleaved_times(
        {n: (lambda c=c: c.predict_tensor(one)) for n, c in classifiers.items()},
        warmup=config.warmup, repeats=config.repeats, time_budget_s=config.time_budget_s,
        min_repeats=config.min_repeats,
    )
    for name, clf in classifiers.items():
        s = latency_summary(lat[name])
        results[name] = {
            "description": clf.backend.describe(),
            "latency_ms_p50": s["p50_ms"], "latency_ms_p95": s["p95_ms"], "latency_repeats": s["repeats"],
            "max_abs_diff_vs_torch": float(np.abs(clf.predict_tensor(one) - ref).max()) if ref is not None else None,
        }
    if sample_image is not None:
        path = str(sample_image)
        e2e = interleaved_times(
            {n: (lambda c=c: c.predict_proba([path])) for n, c in classifiers.items()},
            warmup=config.warmup, repeats=config.e2e_repeats, time_budget_s=config.time_budget_s,
            min_repeats=config.min_repeats,
        )
        for name in classifiers:
            s = latency_summary(e2e[name])
            results[name].update(e2e_latency_ms_p50=s["p50_ms"], e2e_latency_ms_p95=s["p95_ms"],
                                 e2e_repeats=s["repeats"])
    if throughput:
        batch = one.expand(config.throughput_batch, *one.shape[1:]).contiguous()
        thr = interleaved_times(
            {n: (lambda c=c: c.predict_tensor(batch)) for n, c in classifiers.items()},
            warmup=1, repeats=config.throughput_repeats, time_budget_s=config.time_budget_s,
            min_repeats=min(config.min_repeats, config.throughput_repeats),
        )
        for name in classifiers:
            results[name].update(throughput_ips=config.throughput_batch / float(np.median(thr[name])),
                                 throughput_batch=config.throughput_batch)
    base = results.get(BASELINE)
    if base:
        for res in results.values():
            res["speedup_latency"] = base["latency_ms_p50"] / res["latency_ms_p50"]
            if "e2e_latency_ms_p50" in res:
                res["speedup_e2e"] = base["e2e_latency_ms_p50"] / res["e2e_latency_ms_p50"]
            if "throughput_ips" in res:
                res["speedup_throughput"] = res["throughput_ips"] / base["throughput_ips"]
    return results


def measure_backends(model_dir: str | os.PathLike, backends: Sequence[str] | None = None, *,
                     sample_image: str | os.PathLike | None = None, config: SpeedConfig | None = None,
                     throughput: bool = True) -> dict[str, Any]:
    """Measure each backend of a saved model on this machine (for ``compare``'s report).

    ``backends``: concrete names (default: every backend this model can run here: ``torch``, plus
    ``onnx``/``onnx-int8`` when exported, plus ``torch-bf16`` on CPUs with native bf16).
    Returns a JSON-ready dict::

        {"model_dir", "architecture", "machine": {...}, "baseline": "torch", "config": {...},
         "backends": {name: {"description", "latency_ms_p50", "latency_ms_p95", "latency_repeats",
                             "e2e_latency_ms_p50", "e2e_latency_ms_p95" (with sample_image),
                             "throughput_ips", "throughput_batch", "speedup_latency", "speedup_e2e",
                             "speedup_throughput", "max_abs_diff_vs_torch"}},
         "skipped": {name: reason}, "fastest": name (lowest model-only latency)}
    """
    config = config or SpeedConfig()
    if backends is None:
        backends = ["torch", "onnx", "onnx-int8"] + (["torch-bf16"] if bf16_supported() else [])
    names = list(dict.fromkeys([BASELINE, *backends]))  # the baseline always runs, first
    classifiers, skipped = open_backends(model_dir, names)
    results = measure_classifiers(classifiers, sample_image=sample_image, config=config, throughput=throughput)
    for name in names:
        if name not in skipped and name not in results:
            skipped[name] = "not measured"
    fastest = min(results, key=lambda n: results[n]["latency_ms_p50"]) if results else None
    any_clf = classifiers[BASELINE]
    return {
        "model_dir": str(Path(model_dir)),
        "architecture": any_clf.arch,
        "machine": machine_fingerprint(inference_threads()),
        "baseline": BASELINE,
        "config": config.to_dict(),
        "backends": {n: results[n] for n in names if n in results},
        "skipped": skipped,
        "fastest": fastest,
    }
