"""int8 export: calibrated on training images, accepted only with its measured accuracy change."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from export_helpers import CLASSES, write_labelled_folder
from image_classifier.errors import ImageClassifierError
from image_classifier.export.images import labelled_images
from image_classifier.inference.onnx_metadata import read_metadata
from image_classifier.export.pipeline import ExportOptions, export_model
from image_classifier.inference.loading import load_model
from image_classifier.models.registry import build_model, get_arch
from image_classifier.saved_model import read_card, save_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN really trained (a few seconds) to tell the three colour classes apart."""
    root = tmp_path_factory.mktemp("quant")
    train_dir = write_labelled_folder(root / "train", per_class=12, seed=1)
    val_dir = write_labelled_folder(root / "val", per_class=8, seed=2)
    torch.manual_seed(0)
    module, options = build_model("alexnet_like", len(CLASSES), options={"input_size": 32})
    prep = get_arch("alexnet_like").preprocessing.__class__(32)
    from image_classifier.data.decode import load_image

    items = labelled_images(train_dir, CLASSES)
    x = prep([load_image(p, target_size=32) for p, _ in items])
    y = torch.tensor([label for _, label in items])
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    module.train()
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(x), y)
        loss.backward()
        opt.step()
    module.eval()
    card = {"architecture": "alexnet_like", "classes": list(CLASSES), "preprocessing": prep.to_dict(),
            "arch_options": options}
    model_dir = save_model(module, card, root / "model")
    return model_dir, train_dir, val_dir


def test_int8_needs_calibration_and_eval_data(trained):
    model_dir, train_dir, _ = trained
    with pytest.raises(ImageClassifierError, match="--calibration-data DIR and --eval-data DIR"):
        export_model(model_dir, ExportOptions(quantize="int8", calibration_data=train_dir, measure=False))


def test_int8_export_reports_its_accuracy_change(trained):
    model_dir, train_dir, val_dir = trained
    result = export_model(model_dir, ExportOptions(
        quantize="int8", calibration_data=train_dir, calibration_images=16, eval_data=val_dir, measure=False))
    int8_path = model_dir / "model.int8.onnx"
    assert int8_path.is_file() and result.int8["calibration"]["images"] == 16
    # Quantized weights: the file is much smaller than fp32.
    assert int8_path.stat().st_size < 0.5 * (model_dir / "model.onnx").stat().st_size
    assert read_metadata(int8_path)["precision"] == "int8"

    check = result.accuracy_checks["onnx-int8"]
    assert check["images"] == 24 and check["eval_source"].startswith("24 labelled images")
    # The counts are real: recompute fp32 accuracy on the validation images here.
    fp32 = load_model(model_dir, backend="torch")
    paths = [p for p, _ in labelled_images(val_dir, CLASSES)]
    labels = np.array([y for _, y in labelled_images(val_dir, CLASSES)])
    assert check["correct_fp32"] == int((fp32.predict_proba(paths).argmax(1) == labels).sum())
    int8 = load_model(model_dir, backend="onnx-int8")
    assert check["correct"] == int((int8.predict_proba(paths).argmax(1) == labels).sum())
    assert check["change_images"] == check["correct"] - check["correct_fp32"]
    assert check["accepted"] == (check["change_images"] >= -1)
    # The model learnt the task, and int8 keeps it on this easy one.
    assert check["correct_fp32"] >= 20
    assert check["accepted"]
    assert np.abs(int8.predict_proba(paths) - fp32.predict_proba(paths)).max() < 0.2

    card = read_card(model_dir)
    assert card.exports["onnx_int8"]["file"] == "model.int8.onnx"
    assert card.exports["accuracy_checks"]["onnx-int8"]["accepted"] is True
    # fp32 ONNX is checked on the same images and changes nothing.
    assert result.accuracy_checks["onnx"]["change_images"] == 0


def test_accuracy_drop_over_the_limit_is_not_accepted(trained, tmp_path):
    import shutil

    model_dir, train_dir, val_dir = trained
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    # Calibrating on a single dark picture squeezes activation ranges: int8 clips and errs.
    dark = tmp_path / "dark"
    dark.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), (3, 3, 3)).save(dark / "dark.png")
    result = export_model(copy, ExportOptions(
        quantize="int8", calibration_data=dark, eval_data=val_dir, max_accuracy_drop=0, measure=False))
    check = result.accuracy_checks["onnx-int8"]
    assert check["change_images"] < 0 and not check["accepted"]
    from image_classifier.inference.selection import candidates

    names, skipped = candidates(copy, read_card(copy))
    assert "onnx-int8" not in names
    assert f"lost {-check['change_images']} of 24 images" in skipped["onnx-int8"]
    # Still there for whoever asks for it explicitly.
    assert load_model(copy, backend="onnx-int8").backend_name == "onnx-int8"


def test_int8_from_the_training_split_manifest(trained, tmp_path, capsys):
    import argparse
    import shutil

    from image_classifier.cli import export as export_cli
    from image_classifier.data.split import make_split

    model_dir, train_dir, val_dir = trained
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    data = tmp_path / "data"
    for folder in (train_dir, val_dir):  # one data folder, as `image-classifier split` expects
        for path in folder.rglob("*.jpg"):
            dest = data / path.parent.name / f"{folder.name}-{path.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
    split = make_split(data, seed=0, val=0.25, test=0.25)
    split.save(tmp_path / "split.csv")
    parser = argparse.ArgumentParser()
    export_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["export", str(copy), "--quantize", "int8", "--data", str(data),
                              "--split", str(tmp_path / "split.csv"), "--no-measure"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    n_val = len(split.subset("val"))
    assert f"accuracy onnx-int8 vs PyTorch fp32 on {n_val} labelled images from the val subset" in out
    card = read_card(copy)
    assert card.exports["onnx_int8"]["calibration"]["source"].startswith("the train subset of")
    assert card.exports["accuracy_checks"]["onnx-int8"]["images"] == n_val
