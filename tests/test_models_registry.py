"""The registry's architectures: shapes, parameter counts, pretrained weights resolution."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from image_classifier.errors import ModelFormatError, WeightsNotFoundError
from image_classifier.models import build_model, get_arch, list_archs
from image_classifier.models.net import ClassifierNet
from image_classifier.models.registry import ArchSpec, register_arch, unregister_arch
from image_classifier.preprocessing import Preprocessing
from image_classifier.recipe import Phase, Recipe

SHARED_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights"
MOBILENET_FILE = SHARED_WEIGHTS / "mobilenet_v2-b0353104.pth"
RESNET_FILE = SHARED_WEIGHTS / "resnet50-keras-imagenet.pth"
needs_weights = pytest.mark.skipif(not RESNET_FILE.is_file(), reason="../shared/weights not present")


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_study_architectures_are_registered():
    assert {"simple_cnn", "alexnet_like", "mobilenet_v2", "resnet50"} <= set(list_archs())


@pytest.mark.parametrize(
    ("arch", "millions"),
    # Counted by the study's notes from its Keras code (the study's README typed other numbers).
    [pytest.param("simple_cnn", 243.95, marks=pytest.mark.slow),  # a 1 GB network
     ("alexnet_like", 88.98), ("mobilenet_v2", 2.55), ("resnet50", 24.69)],
)
def test_parameter_counts_match_the_study_code(arch, millions):
    net, _ = build_model(arch, 3)
    assert count(net) / 1e6 == pytest.approx(millions, abs=0.01)


@pytest.mark.parametrize("arch", ["alexnet_like", "mobilenet_v2", "resnet50"])
def test_forward_gives_one_logit_per_class(arch):
    spec = get_arch(arch)
    net, _ = build_model(arch, 5)
    net.eval()
    with torch.inference_mode():
        out = net(torch.zeros(2, 3, spec.preprocessing.input_size, spec.preprocessing.input_size))
    assert out.shape == (2, 5)


@pytest.mark.slow  # builds the 244 M-parameter network
def test_simple_cnn_has_no_pooling_and_most_parameters_in_one_dense_layer():
    net, _ = build_model("simple_cnn", 3)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.Dropout)) for m in net.modules())
    dense = net.head[0]
    assert dense.in_features == 122 * 122 * 128
    assert count(dense) / count(net) > 0.99


def test_set_trainable_from_freezes_prefix_and_keeps_frozen_batchnorm_in_eval():
    net, _ = build_model("mobilenet_v2", 3)
    net.set_trainable_from(16)
    net.train()
    assert all(not p.requires_grad for p in net.backbone[:16].parameters())
    assert all(p.requires_grad for p in net.backbone[16:].parameters())
    assert all(p.requires_grad for p in net.head.parameters())
    frozen_bn = [m for m in net.backbone[:16].modules() if isinstance(m, nn.BatchNorm2d)]
    live_bn = [m for m in net.backbone[16:].modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen_bn and not any(m.training for m in frozen_bn)
    assert live_bn and all(m.training for m in live_bn)
    net.set_trainable_from(None)
    assert all(not p.requires_grad for p in net.backbone.parameters())


def test_a_fifth_architecture_is_a_few_lines():
    def tiny(num_classes: int, **_: object) -> ClassifierNet:
        backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return ClassifierNet(backbone, nn.Linear(4, num_classes), 4)

    register_arch(ArchSpec("tiny_test", tiny, Preprocessing(16), lambda: Recipe([Phase("scratch", 1, 1e-3)])))
    try:
        net, _ = build_model("tiny_test", 2)
        assert net(torch.zeros(1, 3, 16, 16)).shape == (1, 2)
        with pytest.raises(ValueError, match="already registered"):
            register_arch(ArchSpec("tiny_test", tiny, Preprocessing(16), lambda: Recipe([])))
    finally:
        unregister_arch("tiny_test")
    with pytest.raises(KeyError, match="unknown architecture 'tiny_test'"):
        get_arch("tiny_test")


def test_missing_pretrained_weights_name_the_file_and_never_fall_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("IMAGE_CLASSIFIER_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFoundError) as info:
        build_model("mobilenet_v2", 3, pretrained=True)
    message = str(info.value)
    assert "mobilenet_v2-b0353104.pth" in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in message
    assert "--weights mobilenet_v2=PATH" in message
    with pytest.raises(WeightsNotFoundError, match="not found"):
        build_model("resnet50", 3, pretrained=True, weights=tmp_path / "nope.pth")


def test_scratch_models_refuse_pretrained():
    with pytest.raises(ValueError, match="from scratch"):
        build_model("simple_cnn", 3, pretrained=True)


def test_a_file_that_is_not_a_state_dict_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not a torch file")
    with pytest.raises(ModelFormatError, match="cannot read weights file"):
        build_model("mobilenet_v2", 3, pretrained=True, weights=bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ModelFormatError, match="not an ImageNet mobilenet_v2 state dict"):
        build_model("mobilenet_v2", 3, pretrained=True, weights=wrong)


@needs_weights
def test_mobilenet_weights_load_from_torchvision_cache(tmp_path, monkeypatch):
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / MOBILENET_FILE.name).symlink_to(MOBILENET_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net, _ = build_model("mobilenet_v2", 3, pretrained=True)
    reference = torch.load(MOBILENET_FILE, weights_only=True)
    assert torch.equal(net.backbone[0][0].weight, reference["features.0.0.weight"])


@needs_weights
def test_keras_resnet_weights_use_v1_blocks_from_their_card():
    net, options = build_model("resnet50", 3, pretrained=True, weights=RESNET_FILE)
    assert options == {"block_variant": "v1"}
    first_blocks = [net.backbone[i] for i in (7, 11, 17)]  # layer2[0], layer3[0], layer4[0]
    assert all(b.conv1.stride == (2, 2) and b.conv2.stride == (1, 1) for b in first_blocks)
    card = json.loads(RESNET_FILE.with_suffix(".json").read_text())
    assert card["block_variant"] == "v1"


@needs_weights
def test_pretrained_resnet_recognises_imagenet_statistics(tmp_path):
    """The loaded backbone is the real one: a plain file copied without its card loads as v1.5
    (torchvision's layout) and gives different features than the v1 build, as the weights README says."""
    plain = tmp_path / "resnet50.pth"
    shutil.copy(RESNET_FILE, plain)
    v15, options = build_model("resnet50", 3, pretrained=True, weights=plain)
    assert options == {"block_variant": "v1.5"}
    v1, _ = build_model("resnet50", 3, pretrained=True, weights=RESNET_FILE)
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        f15, f1 = v15.eval().backbone(x), v1.eval().backbone(x)
    assert f15.shape == f1.shape == (1, 2048)
    assert not torch.allclose(f15, f1)
