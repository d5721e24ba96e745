"""Where ImageNet weights are found: explicit file, then $IMAGE_CLASSIFIER_WEIGHTS, then torchvision's
cache; known names checked by SHA-256; a miss names every place searched. The real weights files
are symlinked into temporary folders (never copied)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder

from image_classifier.cli import main
from image_classifier.errors import ModelFormatError, WeightsNotFoundError
from image_classifier.models import build_model, get_arch
from image_classifier.models.weights import WEIGHTS_ENV, locate_pretrained, resolve_pretrained
from image_classifier.runs import CARD_NAME

SHARED_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights"
MOBILENET_FILE = SHARED_WEIGHTS / "mobilenet_v2-b0353104.pth"
RESNET_FILE = SHARED_WEIGHTS / "resnet50-keras-imagenet.pth"
pytestmark = pytest.mark.skipif(not (MOBILENET_FILE.is_file() and RESNET_FILE.is_file()),
                                reason="../shared/weights not present")


def link(folder: Path, target: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or target.name)
    path.symlink_to(target)
    return path


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An empty weights folder named by the environment variable and an empty torchvision cache."""
    weights_dir, torch_home = tmp_path / "weights", tmp_path / "torch-home"
    weights_dir.mkdir()
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_dir))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return weights_dir, torch_home / "hub" / "checkpoints"


def test_search_order_is_explicit_then_weights_folder_then_torch_cache(places, tmp_path):
    weights_dir, checkpoints = places
    spec = get_arch("mobilenet_v2").pretrained
    in_cache = link(checkpoints, MOBILENET_FILE)
    assert locate_pretrained("mobilenet_v2", spec, None) == in_cache
    in_folder = link(weights_dir, MOBILENET_FILE)
    assert locate_pretrained("mobilenet_v2", spec, None) == in_folder
    explicit = link(tmp_path / "mine", MOBILENET_FILE, "any-name.pth")
    assert locate_pretrained("mobilenet_v2", spec, explicit) == explicit


def test_several_weights_folders_are_searched_in_order(places, tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    in_second = link(second, MOBILENET_FILE)
    monkeypatch.setenv(WEIGHTS_ENV, os.pathsep.join([str(first), str(second)]))
    assert locate_pretrained("mobilenet_v2", get_arch("mobilenet_v2").pretrained, None) == in_second
    in_first = link(first, MOBILENET_FILE)
    assert locate_pretrained("mobilenet_v2", get_arch("mobilenet_v2").pretrained, None) == in_first


def test_weights_folder_gives_the_real_backbone_and_keras_resnet_its_v1_blocks(places):
    weights_dir, _ = places
    link(weights_dir, MOBILENET_FILE)
    # The ResNet-50 file alone, without its JSON card: the registry knows its name, hash and layout.
    link(weights_dir, RESNET_FILE)
    net, _ = build_model("mobilenet_v2", 3, pretrained=True)
    reference = torch.load(MOBILENET_FILE, weights_only=True)
    assert torch.equal(net.backbone[0][0].weight, reference["features.0.0.weight"])
    resolved = resolve_pretrained("resnet50", get_arch("resnet50").pretrained, None)
    assert resolved.source == str(weights_dir / RESNET_FILE.name)
    assert resolved.options == {"block_variant": "v1"} and resolved.card is None
    # face_embedding's no-face fallback is a MobileNetV2: the same file serves it.
    assert locate_pretrained("face_embedding", get_arch("face_embedding").pretrained, None) == weights_dir / MOBILENET_FILE.name


def test_a_known_name_with_other_content_is_refused(places, tmp_path):
    weights_dir, checkpoints = places
    # The ResNet-50 file under MobileNetV2's name: torchvision's name says its SHA-256 starts b0353104.
    link(weights_dir, RESNET_FILE, MOBILENET_FILE.name)
    link(checkpoints, MOBILENET_FILE)
    with pytest.raises(ModelFormatError) as info:
        build_model("mobilenet_v2", 3, pretrained=True)
    message = str(info.value)
    assert str(weights_dir / MOBILENET_FILE.name) in message
    assert "e995b1d86313ce35fcc2839c0b49e01227934e4591c80d3b391ac692c5a3789a" in message
    assert "starting with b0353104" in message
    # The same for an explicit file under a known name.
    wrong = link(tmp_path / "explicit", MOBILENET_FILE, RESNET_FILE.name)
    with pytest.raises(ModelFormatError, match="expected one starting with e995b1d8"):
        build_model("resnet50", 3, pretrained=True, weights=wrong)


def test_a_miss_names_every_place_searched_and_how_to_provide_the_weights(places, tmp_path, monkeypatch):
    weights_dir, checkpoints = places
    missing = tmp_path / "not-there"
    monkeypatch.setenv(WEIGHTS_ENV, os.pathsep.join([str(weights_dir), str(missing)]))
    # A file of another architecture is not taken for this one.
    link(weights_dir, MOBILENET_FILE)
    with pytest.raises(WeightsNotFoundError) as info:
        build_model("resnet50", 3, pretrained=True)
    message = str(info.value)
    assert "resnet50-0676ba61.pth or resnet50-keras-imagenet.pth" in message
    assert f"{weights_dir} (${WEIGHTS_ENV})" in message
    assert f"{missing} (${WEIGHTS_ENV}, no such folder)" in message
    assert f"{checkpoints} (torchvision's cache, $TORCH_HOME/hub/checkpoints, no such folder)" in message
    assert f"set {WEIGHTS_ENV}=FOLDER" in message and "--weights resnet50=PATH" in message

    monkeypatch.delenv(WEIGHTS_ENV)
    with pytest.raises(WeightsNotFoundError, match=rf"\${WEIGHTS_ENV} \(not set\)"):
        build_model("mobilenet_v2", 3, pretrained=True)


@pytest.mark.slow
def test_train_cli_finds_the_weights_folder_without_a_weights_flag(places, tmp_path, capsys):
    weights_dir, _ = places
    link(weights_dir, MOBILENET_FILE)
    data = make_image_folder(tmp_path / "d", {"red": 6, "blue": 6}, size=(64, 48))
    out = tmp_path / "m"
    code = main(["train", str(data), "--arch", "mobilenet_v2", "--out", str(out), "--val", "0.3", "--test", "0.2",
                 "--set", "phases.frozen.epochs=1", "--set", "phases.finetune.epochs=1", "--set", "feature_views=1",
                 "--no-progress", "--no-cache"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((out / CARD_NAME).read_text())
    assert card["pretrained_weights"] == {
        "source": str(weights_dir / MOBILENET_FILE.name),
        "sha256": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",  # the weights README's
    }
