"""Export to ONNX: parity with PyTorch for every registered architecture, metadata, bad files."""
from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from export_helpers import CLASSES, SHARED, make_model_dir, write_labelled_folder
from image_classifier.errors import ModelFormatError, OptionError
from image_classifier.export.onnx_export import export_onnx
from image_classifier.inference.onnx_metadata import read_metadata
from image_classifier.export.pipeline import ExportOptions, export_model
from image_classifier.export.verify import synthetic_images
from image_classifier.inference.loading import load_model
from image_classifier.models.registry import list_archs
from image_classifier.saved_model import read_card

NO_MEASURE = ExportOptions(measure=False)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list_archs())
def test_export_matches_pytorch_for_every_architecture(tmp_path, arch):
    model_dir = make_model_dir(tmp_path, arch)
    result = export_model(model_dir, NO_MEASURE)

    assert result.onnx_path == model_dir / "model.onnx" and result.onnx_path.is_file()
    assert result.parity.passed and result.parity.max_abs_diff <= 1e-4
    assert result.parity.batch_sizes == (16, 1)
    # The batch dimension is dynamic; the graph ends in softmax.
    assert result.graph["inputs"]["input"] == ["batch", 3, 32, 32]
    assert result.graph["outputs"]["probabilities"] == ["batch", len(CLASSES)]
    assert "Softmax" in result.graph["ops"]

    torch_clf = load_model(model_dir, backend="torch")
    onnx_clf = load_model(model_dir, backend="onnx")
    images = synthetic_images(7, seed=5)
    expected = torch_clf.predict_proba(images)
    got = onnx_clf.predict_proba(images, batch_size=4)  # batches of 4 and 3
    assert got.shape == (7, len(CLASSES))
    assert np.abs(got - expected).max() <= 1e-4
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    # The outputs differ between pictures, so the comparison above is not of constants.
    assert expected.std(axis=0).max() > 1e-3


def test_card_records_export_and_metadata_round_trips(tmp_path):
    model_dir = make_model_dir(tmp_path, "alexnet_like")
    export_model(model_dir, NO_MEASURE)
    card = read_card(model_dir)
    record = card.exports["onnx"]
    assert record["file"] == "model.onnx" and record["opset"] == 17
    assert record["verification"]["passed"] is True
    assert record["verification"]["max_abs_diff"] <= 1e-4

    meta = read_metadata(model_dir / "model.onnx")
    assert meta["classes"] == list(CLASSES)
    assert meta["preprocessing"] == card.preprocessing
    assert meta["architecture"] == "alexnet_like"
    assert meta["weights_sha256"] == card.weights_sha256
    assert meta["precision"] == "fp32"
    # The ONNX file alone is enough to run it: metadata + ONNX Runtime, no project code.
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    custom = session.get_modelmeta().custom_metadata_map
    assert json.loads(custom["image_classifier.classes"]) == list(CLASSES)


def test_export_with_other_opset_and_real_images(tmp_path):
    data = write_labelled_folder(tmp_path / "data", per_class=3)
    model_dir = make_model_dir(tmp_path, "simple_cnn")
    result = export_model(model_dir, ExportOptions(opset=13, verify_data=data, measure=False))
    assert result.graph["opset"] == 13
    assert result.parity.image_source.startswith("9 images from")
    assert result.parity.passed


def test_truncated_onnx_file_gives_a_clear_error(tmp_path):
    model_dir = make_model_dir(tmp_path, "alexnet_like")
    export_model(model_dir, NO_MEASURE)
    path = model_dir / "model.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFormatError, match=r"checksum.*re-run `image-classifier export"):
        load_model(model_dir, backend="onnx")


def test_garbage_onnx_file_without_record_gives_a_clear_error(tmp_path):
    model_dir = make_model_dir(tmp_path, "alexnet_like")
    (model_dir / "model.onnx").write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelFormatError, match="not a usable ONNX model"):
        load_model(model_dir, backend="onnx")


def test_missing_onnx_file_says_to_export(tmp_path):
    model_dir = make_model_dir(tmp_path, "alexnet_like")
    with pytest.raises(ModelFormatError, match=r"no model.onnx: run `image-classifier export"):
        load_model(model_dir, backend="onnx")


def test_onnx_file_from_other_weights_is_refused(tmp_path):
    first = make_model_dir(tmp_path, "alexnet_like", seed=1)
    second = make_model_dir(tmp_path, "alexnet_like", seed=2)
    export_model(first, NO_MEASURE)
    shutil.copy(first / "model.onnx", second / "model.onnx")  # second's card has no export record
    with pytest.raises(ModelFormatError, match="exported from different weights"):
        load_model(second, backend="onnx")


def test_onnx_file_with_other_classes_is_refused(tmp_path):
    model_dir = make_model_dir(tmp_path, "alexnet_like")
    export_model(model_dir, NO_MEASURE)
    card_path = model_dir / "model.json"
    card = json.loads(card_path.read_text())
    card["classes"] = list(reversed(card["classes"]))
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="predicts classes"):
        load_model(model_dir, backend="onnx")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy exporter announces itself
def test_onnx_without_our_metadata_is_refused(tmp_path):
    import torch

    model_dir = make_model_dir(tmp_path, "alexnet_like")
    clf = load_model(model_dir)
    torch.onnx.export(clf.module, (torch.zeros(1, 3, 32, 32),), str(model_dir / "model.onnx"), dynamo=False,
                      input_names=["input"], output_names=["logits"])
    with pytest.raises(ModelFormatError, match="no image-classifier metadata"):
        load_model(model_dir, backend="onnx")


def test_export_cli(tmp_path, capsys):
    from image_classifier.cli import export as export_cli

    model_dir = make_model_dir(tmp_path, "simple_cnn", input_size=24)
    parser = argparse.ArgumentParser()
    export_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["export", str(model_dir), "--no-measure", "--opset", "18"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"wrote {model_dir / 'model.onnx'}" in out and "opset 18" in out
    assert "verified against PyTorch on synthetic: max abs diff" in out
    assert read_card(model_dir).exports["onnx"]["opset"] == 18


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "weights" / "mobilenet_v2-b0353104.pth").is_file(), reason="needs ../shared/weights")
def test_real_mobilenet_v2_export_matches_on_real_photos(tmp_path):
    athletes = SHARED / "datasets" / "athletes"
    classes = ("Kobe Bryant", "Maria Sharapova", "ronaldo")
    model_dir = make_model_dir(tmp_path, "mobilenet_v2", input_size=224, classes=classes,
                               pretrained_weights=SHARED / "weights" / "mobilenet_v2-b0353104.pth")
    verify = athletes if athletes.is_dir() else None
    result = export_model(model_dir, ExportOptions(verify_data=verify, verify_images=12, measure=False))
    assert result.parity.passed, result.parity
    assert result.parity.max_abs_diff <= 1e-4
    if verify is not None:
        assert "images from" in result.parity.image_source


def test_the_low_level_export_refuses_an_opset_with_the_options_own_message(tmp_path):
    with pytest.raises(OptionError, match="^--opset must be between 11 and 20, not 9$"):
        export_onnx(torch.nn.Conv2d(3, 2, 1), 8, tmp_path / "m.onnx", opset=9)
    assert not (tmp_path / "m.onnx").exists()
