"""What an exported ONNX file says about itself, and the checks made when it is loaded.

The class names and the preprocessing are stored in the ONNX file's ``metadata_props`` (besides the
model card), so the file alone is enough to deploy it with any ONNX runtime. The weights' sha256 of
the saved model it came from is stored too: a ``model.onnx`` left over from before a retrain, or
copied from another model directory, is refused instead of silently serving the wrong network.

It lives in the inference layer because both sides need it: :mod:`image_classifier.export` writes
these entries and :mod:`.backends` checks them when it opens a file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from image_classifier.card import ModelCard
from image_classifier.errors import ModelFormatError
from image_classifier.inference.calibration import card_temperature

PREFIX = "image_classifier."
FORMAT_VERSION = "1"


def card_metadata(card: ModelCard, *, precision: str = "fp32") -> dict[str, str]:
    """The ``metadata_props`` written into an exported file (all values are strings)."""
    prep = card.preprocessing
    return {
        f"{PREFIX}format_version": FORMAT_VERSION,
        f"{PREFIX}architecture": str(card.architecture),
        f"{PREFIX}classes": json.dumps(list(card.classes)),
        f"{PREFIX}preprocessing": json.dumps(prep, sort_keys=True),
        f"{PREFIX}input": json.dumps({
            "name": "input", "dtype": "float32", "layout": "NCHW (batch, 3, height, width)",
            "pixels": "RGB resized to input_size ('squash': straight to a square; 'center_crop': shorter "
                      "side then centre crop), scaled to [0, 1], then (x - mean) / std per channel",
        }),
        f"{PREFIX}output": "probabilities: softmax(logits / temperature) over the classes, in the order of "
                           "'classes' (temperature: the calibration fitted on the validation split)",
        f"{PREFIX}weights_sha256": str(card.weights_sha256 or ""),
        f"{PREFIX}precision": precision,
        f"{PREFIX}temperature": repr(card_temperature(card)),
    }


def file_temperature(meta: dict[str, Any]) -> float:
    """The temperature an exported file's softmax divides by (parsed metadata); a file exported
    before calibration existed has none and computes ``softmax(logits)``, i.e. 1.0."""
    try:
        return float(meta.get("temperature", 1.0))
    except (TypeError, ValueError) as err:
        raise ModelFormatError(f"ONNX metadata {PREFIX}temperature is not a number: {meta.get('temperature')!r}") from err


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str], doc: str | None = None) -> None:
    """Replace ``image_classifier.*`` entries of an ``onnx.ModelProto``'s metadata with ``metadata``."""
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "image-classifier"
    if doc:
        model.doc_string = doc


def parse_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """Decode the ``image_classifier.*`` entries: classes and preprocessing as Python objects."""
    out: dict[str, Any] = {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)}
    for key in ("classes", "preprocessing", "input"):
        if key in out:
            try:
                out[key] = json.loads(out[key])
            except json.JSONDecodeError as err:
                raise ModelFormatError(f"ONNX metadata {PREFIX}{key} is not valid JSON: {err}") from err
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded ``image_classifier.*`` metadata of an ONNX file (without loading its weights
    into a runtime)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf DecodeError and friends
        raise ModelFormatError(f"{path} is not a readable ONNX file: {err}") from err
    return parse_metadata({p.key: p.value for p in model.metadata_props})


def check_against_card(metadata: dict[str, str], card: ModelCard, path: str | Path, *,
                       input_shape: list | None = None, output_shape: list | None = None) -> None:
    """Raise ``ModelFormatError`` unless the ONNX file at ``path`` was exported from the model
    described by ``card`` (same weights, classes and preprocessing; matching tensor shapes)."""
    meta = parse_metadata(metadata)
    model_dir = Path(path).parent
    rerun = f"re-run `image-classifier export {model_dir}`"
    if "classes" not in meta or "preprocessing" not in meta:
        raise ModelFormatError(
            f"{path} has no image-classifier metadata (class names, preprocessing): it was not written by "
            f"`image-classifier export`; {rerun}"
        )
    expected_sha = card.weights_sha256
    if expected_sha and meta.get("weights_sha256") and meta["weights_sha256"] != expected_sha:
        raise ModelFormatError(
            f"{path} was exported from different weights than {model_dir}/{card.weights_file or 'weights'} "
            f"(retrained after export, or copied from another model); {rerun}"
        )
    if list(meta["classes"]) != list(card.classes):
        raise ModelFormatError(
            f"{path} predicts classes {meta['classes']} but the model card lists {card.classes}; {rerun}"
        )
    prep_card = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in card.preprocessing.items()}
    if meta["preprocessing"] != prep_card:
        raise ModelFormatError(
            f"{path} was exported with preprocessing {meta['preprocessing']}, the model card says {prep_card}; {rerun}"
        )
    exported_t, card_t = file_temperature(meta), card_temperature(card)
    if abs(exported_t - card_t) > 1e-6 * max(1.0, card_t):
        raise ModelFormatError(
            f"{path} was exported with calibration temperature {exported_t:g}, but the model card's is "
            f"{card_t:g} (the model was calibrated again after export): its probabilities would differ from "
            f"PyTorch's; {rerun}"
        )
    size = card.input_size
    if input_shape is not None and len(input_shape) == 4:
        fixed = input_shape[1:]
        # A card without an input size (none is written without preprocessing) checks the channels only.
        if any(isinstance(d, int) and want is not None and d != want for d, want in zip(fixed, (3, size, size))):
            raise ModelFormatError(f"{path} takes inputs of shape {input_shape}, the model needs (N, 3, {size}, {size}); {rerun}")
    elif input_shape is not None:
        raise ModelFormatError(f"{path} takes inputs of shape {input_shape}, not an image batch; {rerun}")
    if output_shape is not None and output_shape and isinstance(output_shape[-1], int) \
            and output_shape[-1] != len(card.classes):
        raise ModelFormatError(
            f"{path} outputs {output_shape[-1]} scores, the model has {len(card.classes)} classes; {rerun}"
        )
