"""How big and how fast a model is, measured on this machine.

The study reported one ``predict`` call over all 437 images as its "inference time" and typed its
parameter counts by hand. Here every number is measured: parameters are counted from the module,
size is the bytes of the saved model directory, FLOPs come from ``torch.utils.flop_counter``, and
latency is the median and 95th percentile of many single-image calls after a warm-up (the first
calls pay for allocator growth and one-time kernel selection, which a server pays only once).
The timing primitives (:class:`SpeedConfig`, :func:`time_calls`, :func:`latency_summary`) are
:mod:`image_classifier.inference.timing`'s, shared with the backend measurement.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from image_classifier.inference.backends import module_device
from image_classifier.inference.model import Model
from image_classifier.inference.timing import SpeedConfig, latency_summary, time_calls
from image_classifier.machine import load_average

__all__ = ["SpeedConfig", "count_parameters", "dir_size_bytes", "flops_per_image", "latency_summary",
           "measure_classifier", "time_calls", "trained_parameter_count"]

log = logging.getLogger(__name__)


def count_parameters(module: Any) -> tuple[int, int]:
    """(total, trainable) parameter counts, shared tensors counted once."""
    seen: set[int] = set()
    total = trainable = 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def trained_parameter_count(module: Any, recipe: dict | None) -> int | None:
    """Parameters that some phase of the recipe trained (the rest kept their pretrained values).

    A loaded model has every parameter frozen, so ``requires_grad`` no longer says what training
    touched; the recipe does: each phase trains ``backbone[trainable_from:]`` and the head
    (``trainable_from`` None = head only). Returns None when the module or recipe lacks that shape.
    """
    backbone = getattr(module, "backbone", None)
    head = getattr(module, "head", None)
    phases = (recipe or {}).get("phases") or []
    if backbone is None or head is None or not phases:
        return None
    starts = [len(backbone) if p.get("trainable_from") is None else int(p["trainable_from"]) for p in phases]
    first = min(starts)
    count = sum(p.numel() for block in list(backbone)[first:] for p in block.parameters())
    return count + sum(p.numel() for p in head.parameters())


def dir_size_bytes(path: str | os.PathLike) -> int:
    """Bytes of every regular file under ``path`` (what copying the model dir would move)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def flops_per_image(module: Any, batch: Any) -> int:
    """Floating-point operations of one forward pass per image, counted by PyTorch.

    ``FlopCounterMode`` counts convolutions and matrix products as 2 x multiply-accumulates and
    ignores cheap element-wise ops (ReLU, BatchNorm in eval, additions), which is the usual
    convention for "FLOPs" of a CNN.
    """
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(torch.as_tensor(batch).to(module_device(module)))  # where the network is: CPU or GPU
    return int(counter.get_total_flops() // max(1, batch.shape[0]))


def measure_classifier(
    classifier: Model,
    *,
    model_dir: str | os.PathLike | None = None,
    sample_image: str | os.PathLike | None = None,
    config: SpeedConfig | None = None,
) -> dict:
    """Size and speed of one loaded model of any kind (see :func:`image_classifier.load_model`), on
    the backend it was loaded with (eager PyTorch, ONNX Runtime, ...; an ensemble: each member's).

    - model-only latency: ``classifier.predict_tensor(x)`` on a ready input (``forward_input``: a
      CNN's (1, 3, H, W) float32 array, what ``predict`` hands the backend after preprocessing;
      softmax included; an ensemble's packed row, every member's forward pass);
    - end-to-end latency: ``classifier.predict_proba([sample_image])``, i.e. read the file, decode,
      resize, normalise and forward, which is what a user of ``predict`` or the web app waits for;
    - throughput: images per second of ``predict_tensor`` at batch ``config.throughput_batch``.

    Parameters, FLOPs and size are counted on the PyTorch networks it computes with (the same for
    every backend; an ensemble's are its members' sums: what serving it loads and computes); the
    size is ``model_dir``'s when given. Returns a JSON-ready dict; end-to-end keys are ``None``
    when no sample image is given.
    """
    config = config or SpeedConfig()
    grey = Image.new("RGB", (64, 48), (127, 127, 127))
    params = trainable = flops = 0
    trainable_known = True
    for clf in classifier.networks():
        module = clf.module.eval()
        params += count_parameters(module)[0]
        own = trained_parameter_count(module, clf.card.recipe)
        trainable_known = trainable_known and own is not None
        trainable += own or 0
        flops += flops_per_image(module, torch.from_numpy(clf.forward_input([grey])))
    dirs = [model_dir] if model_dir is not None else [c.model_dir for c in classifier.networks() if c.model_dir]
    size = sum(dir_size_bytes(d) for d in dirs) if dirs else None
    # numpy, as ``predict`` passes it: an ONNX backend takes it as is, PyTorch wraps it without a copy.
    one = np.ascontiguousarray(classifier.forward_input([grey]), dtype=np.float32)
    batch = np.ascontiguousarray(np.broadcast_to(one, (config.throughput_batch, *one.shape[1:])))
    lat = latency_summary(time_calls(
        lambda: classifier.predict_tensor(one), warmup=config.warmup, repeats=config.repeats,
        time_budget_s=config.time_budget_s, min_repeats=config.min_repeats,
    ))
    batch_times = time_calls(
        lambda: classifier.predict_tensor(batch), warmup=1, repeats=config.throughput_repeats,
        time_budget_s=config.time_budget_s, min_repeats=min(config.min_repeats, config.throughput_repeats),
    )
    e2e = None
    if sample_image is not None:
        path = str(sample_image)
        e2e = latency_summary(time_calls(
            lambda: classifier.predict_proba([path]), warmup=config.warmup, repeats=config.e2e_repeats,
            time_budget_s=config.time_budget_s, min_repeats=config.min_repeats,
        ))
    load = load_average()
    return {
        "params": params,
        "trainable_params": trainable if trainable_known else None,
        "size_bytes": size,
        "size_mb": size / 1e6 if size is not None else None,
        "flops_per_image": flops,
        "input_shape": list(one.shape[1:]) if one.ndim == 4 else None,  # an ensemble's packed row is no image
        "latency_ms_p50": lat["p50_ms"],
        "latency_ms_p95": lat["p95_ms"],
        "latency_repeats": lat["repeats"],
        "e2e_latency_ms_p50": e2e["p50_ms"] if e2e else None,
        "e2e_latency_ms_p95": e2e["p95_ms"] if e2e else None,
        "e2e_repeats": e2e["repeats"] if e2e else None,
        "forward_is_whole": classifier.forward_is_whole,
        "throughput_ips": config.throughput_batch / float(np.median(batch_times)),
        "throughput_batch": config.throughput_batch,
        "backend": classifier.backend_name,
        "backend_description": classifier.backend.describe(),
        "torch_threads": torch.get_num_threads(),
        # Other processes competing for the cores inflate latencies; the report warns when this is
        # above the core count.
        "load_avg_1m": None if load is None else round(load, 2),
    }
