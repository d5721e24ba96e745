"""``image-classifier export``: write, verify and record a saved model's ONNX file(s).

Order of work, so that nothing unverified is ever left where a backend would load it:

1. export the network (+ softmax) to a temporary file beside the model;
2. run it with ONNX Runtime and PyTorch on the same images (real ones when a data folder is given,
   else synthetic) at batch N and batch 1; fail if any probability differs by more than 1e-4;
3. rename it to ``model.onnx`` and record it in the model card (checksum, opset, parity figures);
4. optionally quantize to int8 (calibrated on training images) and bf16-check PyTorch, each with its
   accuracy change measured on labelled images the calibration did not use;
5. measure the backends on this machine and record the fastest (what ``--backend auto`` serves).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from image_classifier.data.decode import decode_each, load_image
from image_classifier.data.split import load_split
from image_classifier.errors import DatasetError, ImageClassifierError, ModelFormatError
from image_classifier.export.images import any_images, labelled_images, spread_sample
from image_classifier.export.options import ExportOptions
from image_classifier.export.onnx_export import export_onnx, graph_summary
from image_classifier.export.quantize import accuracy_change, quantize_int8
from image_classifier.export.verify import ParityReport, check_parity, synthetic_images
from image_classifier.fileio import sha256_file
from image_classifier.inference.backends import OnnxBackend, TorchBackend
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.kinds import open_classifier
from image_classifier.inference.ensemble import ensemble_members, is_ensemble_card
from image_classifier.inference.onnx_metadata import card_metadata
from image_classifier.inference.selection import BackendChoice, choose_backend
from image_classifier.machine import bf16_supported
from image_classifier.runs import ONNX_INT8_NAME, ONNX_NAME, SPLIT_NAME
from image_classifier.saved_model import ModelCard, read_card, write_card

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    model_dir: Path
    onnx_path: Path
    size_bytes: int
    parity: ParityReport
    graph: dict[str, Any]
    seconds: float
    int8: dict[str, Any] | None = None
    accuracy_checks: dict[str, dict] = field(default_factory=dict)
    choice: BackendChoice | None = None


def _load_batches(classifier: Classifier, paths: Sequence[Path], batch_size: int = 32) -> tuple[list[np.ndarray], list[int]]:
    """Preprocessed float32 batches of the readable images among ``paths`` and their indices."""
    size = classifier.preprocessing.input_size
    decoded = decode_each(paths, lambda path: load_image(path, target_size=size))
    images = decoded.images
    batches = [classifier.preprocessing(images[i:i + batch_size]).numpy() for i in range(0, len(images), batch_size)]
    return batches, decoded.kept


def _verification_images(classifier: Classifier, options: ExportOptions) -> tuple[list, str]:
    folder = options.verify_data or options.eval_data or options.calibration_data or options.data
    if folder is not None:
        paths = spread_sample(any_images(folder, classifier.classes), options.verify_images, seed=1)
        size = classifier.preprocessing.input_size
        images = decode_each(paths, lambda p: load_image(p, target_size=size)).images
        if images:
            return images, f"{len(images)} images from {folder}"
    return synthetic_images(options.verify_images), "synthetic"


def _update_card(model_dir: Path, update: dict[str, Any]) -> ModelCard:
    card = read_card(model_dir)
    exports = dict(card.exports or {})
    checks = dict(exports.get("accuracy_checks") or {})
    checks.update(update.pop("accuracy_checks", {}))
    exports.update(update)
    if checks:
        exports["accuracy_checks"] = checks
    card.exports = exports
    write_card(model_dir, card)
    return card


@dataclass
class _Sources:
    """Where calibration and accuracy images come from, whichever options named them."""

    calibration: list[Path]
    calibration_source: str
    labelled: list[tuple[Path, int]]
    labelled_source: str


def _resolve_sources(classifier: Classifier, options: ExportOptions) -> _Sources:
    classes = classifier.classes
    calibration: list[Path] = []
    labelled: list[tuple[Path, int]] = []
    calib_src = label_src = ""
    if options.data is not None or options.split is not None:
        if options.data is None or options.split is None:
            raise ImageClassifierError("--data and --split go together (the data folder and its split manifest)")
        split = load_split(options.split, options.data)
        expected = classifier.card.split_manifest_sha256
        if expected and expected != split.manifest_sha256:
            log.warning("%s is not the split this model was trained with (manifest sha256 differs): the "
                        "accuracy check may include training images", options.split)
        index = {c: i for i, c in enumerate(classes)}
        missing = sorted(set(split.classes) - set(index))
        if missing:
            raise DatasetError(f"{options.split} has classes the model does not know: {', '.join(missing)}")
        calibration = [r.path for r in split.subset("train")]
        labelled = [(r.path, index[r.class_name]) for r in split.subset(options.eval_subset)]
        calib_src = f"the train subset of {options.split}"
        label_src = f"the {options.eval_subset} subset of {options.split}"
    if options.calibration_data is not None:
        calibration = any_images(options.calibration_data, classes)
        calib_src = str(options.calibration_data)
    if options.eval_data is not None:
        labelled = labelled_images(options.eval_data, classes)
        label_src = str(options.eval_data)
    return _Sources(calibration, calib_src, labelled, label_src)


def _accuracy_data(classifier: Classifier, sources: _Sources, exclude: set[Path]) -> tuple[list[np.ndarray], list[int], str]:
    items = [(p, y) for p, y in sources.labelled if p.resolve() not in exclude]
    if len(items) < len(sources.labelled):
        log.info("the accuracy check leaves out %d calibration images", len(sources.labelled) - len(items))
    if not items:
        raise DatasetError(f"{sources.labelled_source}: no labelled images left for the accuracy check")
    batches, kept = _load_batches(classifier, [p for p, _ in items])
    labels = [items[i][1] for i in kept]
    return batches, labels, f"{len(labels)} labelled images from {sources.labelled_source}"


def _judge(check: dict[str, Any], options: ExportOptions, source: str) -> dict[str, Any]:
    return {**check, "eval_source": source, "max_drop_images": options.max_accuracy_drop,
            "accepted": check["change_images"] >= -options.max_accuracy_drop,
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def export_model(model_dir: str | os.PathLike, options: ExportOptions | None = None) -> ExportResult:
    """Export, verify and record; see the module docstring. Raises ``ImageClassifierError`` with
    what to do when the model, the data or the verification fails."""

    options = options or ExportOptions()
    t_start = time.perf_counter()
    model_dir = Path(model_dir)
    if is_ensemble_card(read_card(model_dir)):
        # Its members have their own ONNX files and backends; the ensemble is only their weights.
        members = ", ".join(m.path for m in ensemble_members(model_dir) if m.weight > 0)
        raise ImageClassifierError(f"{model_dir} is an ensemble: it has no ONNX file of its own; export its members "
                                   f"instead ({members}, relative to it), and it runs each on its own backend")
    classifier = open_classifier(model_dir, "torch")
    sources = _resolve_sources(classifier, options)
    if options.quantize and (not sources.calibration or not sources.labelled):
        raise ImageClassifierError(
            "--quantize int8 needs training images to calibrate on and labelled images to measure its "
            f"accuracy change on: give --data DIR --split {SPLIT_NAME} (train / val subsets), or "
            "--calibration-data DIR and --eval-data DIR; an int8 model is only offered with its measured "
            "accuracy change"
        )
    card = classifier.card
    prep = classifier.preprocessing
    torch_backend = classifier.backend

    # 1-2. export beside the model under a temporary name, verify, then publish.
    final = model_dir / ONNX_NAME
    staging = model_dir / f".{ONNX_NAME}.unverified"
    doc = (f"{card.architecture} image classifier for classes {', '.join(card.classes)}. Input 'input': "
           f"float32 (batch, 3, {prep.input_size}, {prep.input_size}) RGB, resize_mode {prep.resize_mode}, "
           f"scaled to [0,1] then (x - {list(prep.mean)}) / {list(prep.std)}. Output 'probabilities' "
           f"(calibrated: softmax(logits / {classifier.temperature:g})).")
    try:
        export_onnx(classifier.module, prep.input_size, staging, opset=options.opset,
                    metadata=card_metadata(card), doc=doc, temperature=classifier.temperature,
                    features=classifier.reads_features)
        images, source = _verification_images(classifier, options)
        parity = check_parity(torch_backend, OnnxBackend(staging), images, preprocessing=prep,
                              tolerance=options.tolerance, image_source=source)
        if not parity.passed:
            raise ModelFormatError(
                f"the exported ONNX model does not match PyTorch: max abs difference of probabilities "
                f"{parity.max_abs_diff:.2e} > {options.tolerance:.0e} on {source}; nothing was written. "
                f"Try another --opset, or report this with the model's architecture"
            )
        os.replace(staging, final)
    finally:
        staging.unlink(missing_ok=True)
    log.info("%s: verified, max abs diff %.2e on %s", final, parity.max_abs_diff, source)
    graph = graph_summary(final)
    record = {
        "file": ONNX_NAME,
        "sha256": sha256_file(final),
        "size_bytes": final.stat().st_size,
        "format": "onnx",
        "opset": options.opset,
        "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)",
        "input": {"name": "input", "shape": ["batch", 3, prep.input_size, prep.input_size], "dtype": "float32"},
        "output": {"name": "probabilities", "shape": ["batch", len(card.classes)], "dtype": "float32"},
        "verification": parity.to_dict(),
        "onnxruntime": ort.__version__,
        "exported_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    update: dict[str, Any] = {"onnx": record}

    # 4. reduced precision, each with its accuracy change on labelled images.
    checks: dict[str, dict] = {}
    int8_info = None
    calib_paths: list[Path] = []
    if options.quantize == "int8":
        calib_paths = spread_sample(sources.calibration, options.calibration_images, seed=2)
        calib_batches, kept = _load_batches(classifier, calib_paths, batch_size=8)
        if not kept:
            raise DatasetError(f"{sources.calibration_source}: no readable images to calibrate on")
        int8_path = model_dir / ONNX_INT8_NAME
        quantize_int8(final, int8_path, calib_batches, metadata=card_metadata(card, precision="int8"))
        int8_info = {
            "file": ONNX_INT8_NAME,
            "sha256": sha256_file(int8_path),
            "size_bytes": int8_path.stat().st_size,
            "calibration": {"images": len(kept), "source": sources.calibration_source, "method": "MinMax",
                            "format": "QDQ, per-channel int8 weights, uint8 activations"},
            "onnxruntime": ort.__version__,
            "exported_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        update["onnx_int8"] = int8_info
    if sources.labelled:
        exclude = {p.resolve() for p in calib_paths}
        batches, labels, source = _accuracy_data(classifier, sources, exclude)
        if options.quantize == "int8":
            int8_backend = OnnxBackend(model_dir / ONNX_INT8_NAME, name="onnx-int8")
            checks["onnx-int8"] = _judge(accuracy_change(torch_backend, int8_backend, batches, labels), options, source)
        if bf16_supported():
            bf16 = TorchBackend(classifier.module, bf16=True, temperature=classifier.temperature)
            checks["torch-bf16"] = _judge(accuracy_change(torch_backend, bf16, batches, labels), options, source)
        # fp32 ONNX too, as a record that it changes nothing on real data.
        checks["onnx"] = _judge(accuracy_change(torch_backend, OnnxBackend(final), batches, labels), options, source)
    if checks:
        update["accuracy_checks"] = checks
    _update_card(model_dir, update)

    # 5. measure and record what "auto" will serve.
    choice = choose_backend(model_dir, remeasure=True) if options.measure else None
    return ExportResult(model_dir, final, final.stat().st_size, parity, graph,
                        time.perf_counter() - t_start, int8_info, checks, choice)
