"""Scoring a real saved (tiny) model on real image files; the run layout (the ``best`` pointer, a
run's models, the split of a run or a model); ``evaluate``'s warning about images trained on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from image_classifier import load_model
from image_classifier.errors import DatasetError, ModelFormatError
from image_classifier.evaluate.evaluation import DecodeCache, LabelledImage, evaluate_classifier
from image_classifier.models.net import ClassifierNet
from image_classifier.models.registry import ArchSpec, register_arch, unregister_arch
from image_classifier.preprocessing import Preprocessing
from image_classifier.recipe import Phase, Recipe
from conftest import make_image_folder
from image_classifier.data.split import make_split
from image_classifier.results import Study
from image_classifier.runs import (
    best_model_name, models_of_run, read_best_pointer, read_metrics, resolve_model_dir, split_of_model_dir, split_of_run,
    write_best_pointer,
)
from image_classifier.study.evaluate import EvaluateOptions, run_evaluate
from image_classifier.saved_model import save_model

ARCH = "tiny_eval_colour"
CLASSES = ["blue", "<script>x</script>", "red"]


def _build(num_classes: int, backbone_state=None) -> ClassifierNet:
    backbone = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return ClassifierNet(backbone, nn.Linear(3, num_classes), 3)


@pytest.fixture
def mean_colour_model(tmp_path: Path):
    """A 3-class model that reads the mean colour: weights set by hand so its answers are known."""
    register_arch(ArchSpec(ARCH, _build, Preprocessing(16), lambda: Recipe([Phase("scratch", 1, 1e-3)])), replace=True)
    net = _build(3)
    with torch.no_grad():
        # logits = 20 * (blue, green, red) channel means: argmax is the dominant channel.
        net.head.weight.copy_(torch.tensor([[0, 0, 20.0], [0, 20.0, 0], [20.0, 0, 0]]))
        net.head.bias.zero_()
    card = {"architecture": ARCH, "arch_options": {}, "classes": CLASSES,
            "preprocessing": Preprocessing(16).to_dict()}
    model_dir = save_model(net, card, tmp_path / "run" / "models" / ARCH)
    yield model_dir
    unregister_arch(ARCH)


def _write(folder: Path, name: str, rgb) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", (30, 20), rgb).save(path)
    return path


def test_evaluate_known_answers(mean_colour_model: Path, tmp_path: Path):
    data = tmp_path / "data"
    items = []
    # red folder: 3 red images and one green one (-> predicted "<script>x</script>", a mistake)
    for i in range(3):
        items.append(LabelledImage(_write(data / "red", f"r{i}.png", (250, 5, 5)), f"red/r{i}.png", "red"))
    items.append(LabelledImage(_write(data / "red", "g.png", (5, 250, 5)), "red/g.png", "red"))
    for i in range(2):
        items.append(LabelledImage(_write(data / "blue", f"b{i}.png", (5, 5, 250)), f"blue/b{i}.png", "blue"))
    broken = data / "blue" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    items.append(LabelledImage(broken, "blue/broken.jpg", "blue"))

    cache = DecodeCache()
    out = evaluate_classifier(load_model(mean_colour_model), items, cache=cache)
    test = out.metrics
    assert test.n == 6
    assert test.accuracy == pytest.approx(5 / 6)
    cm = np.array(test.confusion_matrix)
    assert cm.sum() == 6 and np.trace(cm) == 5
    assert cm[2, 1] == 1  # true red, predicted the green class
    assert out.skipped and "blue/broken.jpg" in out.skipped
    assert [e.rel_path for e in out.errors] == ["red/g.png"]
    assert out.errors[0].predicted == "<script>x</script>" and out.errors[0].confidence > 0.9
    assert out.errors[0].true == "red" and out.errors[0].path == str(data / "red" / "g.png")
    assert out.correct.sum() == 5
    assert [p.rel_path for p in out.predictions] == [it.rel_path for it in items if it.path != broken]
    assert len(cache._images) == 6  # decoded once, reusable by the next model of a run


def test_unknown_class_is_a_clear_error(mean_colour_model: Path, tmp_path: Path):
    items = [LabelledImage(_write(tmp_path / "d" / "purple", "p.png", (200, 0, 200)), "purple/p.png", "purple")]
    with pytest.raises(DatasetError, match="not trained on: 'purple'"):
        evaluate_classifier(load_model(mean_colour_model), items)


def test_best_pointer_round_trip(mean_colour_model: Path, tmp_path: Path):
    run = mean_colour_model.parent.parent
    assert read_best_pointer(run) is None
    with pytest.raises(ModelFormatError, match="neither a saved model"):
        resolve_model_dir(run)
    link = write_best_pointer(run, mean_colour_model)
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert resolve_model_dir(run) == mean_colour_model.resolve()
    assert resolve_model_dir(mean_colour_model) == mean_colour_model
    # Re-pointing replaces the old pointer; a pointer file works where symlinks do not.
    link.unlink()
    (run / "best").write_text(f"models/{ARCH}\n")
    assert resolve_model_dir(run) == mean_colour_model.resolve()
    write_best_pointer(run, mean_colour_model)
    assert (run / "best").is_symlink()


def test_run_layout_discovery(mean_colour_model: Path, tmp_path: Path):
    run = mean_colour_model.parent.parent
    assert models_of_run(run) == {ARCH: mean_colour_model}
    assert best_model_name(run) is None and read_metrics(run) is None
    write_best_pointer(run, mean_colour_model)
    assert best_model_name(run) == ARCH
    other = tmp_path / "elsewhere"
    other.mkdir()
    (run / "best").unlink()
    (run / "best").symlink_to(other)
    with pytest.raises(ModelFormatError, match="not one of the run's models"):
        best_model_name(run)
    # A run's split serves its models; a model trained with `train` keeps its own beside it.
    assert split_of_model_dir(mean_colour_model) is None
    (run / "split.csv").write_text("x")
    assert split_of_model_dir(mean_colour_model) == run / "split.csv" and split_of_run(run) == run / "split.csv"
    (mean_colour_model / "split.csv").write_text("y")
    assert split_of_model_dir(mean_colour_model) == mean_colour_model / "split.csv"
    (run / "metrics.json").write_text("{not json")
    assert read_metrics(run) is None
    (run / "metrics.json").write_text('{"models": []}')
    assert read_metrics(run) == {"models": []}


def test_evaluate_warns_about_images_a_train_model_was_trained_on(mean_colour_model: Path, tmp_path: Path):
    """``train --out DIR`` keeps the split beside the model: ``evaluate`` finds it there and says
    how many of the scored images the model was trained or validated on."""
    data = make_image_folder(tmp_path / "photos", {"red": 6, "blue": 6})
    split = make_split(data, seed=0, val=0.25, test=0.25)
    split.save(mean_colour_model / "split.csv")
    card = json.loads((mean_colour_model / "model.json").read_text())
    card["split_manifest_sha256"] = split.manifest_sha256
    (mean_colour_model / "model.json").write_text(json.dumps(card))
    seen = len(split.subset("train")) + len(split.subset("val"))

    study = run_evaluate(EvaluateOptions(model=mean_colour_model, data=data, out=tmp_path / "ev", speed=False))
    assert study.alerts == [
        f"{seen} of the 12 images were in this model's training or validation split ({mean_colour_model / 'split.csv'}); "
        f"its scores on them are optimistic. Pass --split {mean_colour_model / 'split.csv'} --subset test to score "
        "only images it never saw."]
    assert study.models[0].test.n == 12 and study.scored_set == "images"
    assert Study.load(tmp_path / "ev") == study
    # The held-out subset of the same split: nothing to warn about.
    held_out = run_evaluate(EvaluateOptions(model=mean_colour_model, data=data, split=mean_colour_model / "split.csv",
                                            out=tmp_path / "ev-test", speed=False))
    assert held_out.alerts == [] and held_out.models[0].test.n == len(split.subset("test"))
