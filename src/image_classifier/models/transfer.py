"""ImageNet backbones with the study's heads, flattened into ``ClassifierNet``'s backbone/head shape.

The backbone is laid out block by block (not stage by stage) so that a recipe can unfreeze exactly
the blocks the study fine-tuned, and training can cache the output of the frozen prefix.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchvision import models as tvm

from image_classifier.errors import ModelFormatError
from image_classifier.models.net import ClassifierNet

# Index into the backbone where the study's fine-tuning starts (see the recipes in registry.py).
MOBILENET_V2_FINETUNE_FROM = 16  # features[16:]: inverted-residual blocks 15 and 16 + the last 1x1 conv
RESNET50_FINETUNE_FROM = 13  # layer3[2:] + layer4: the study froze its first 100 Keras layers


def _load_tv_state(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str) -> None:
    """Load ImageNet weights into the torchvision model, ignoring only its 1000-class classifier."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    missing = [k for k in own if k not in state and not k.startswith(("fc.", "classifier."))]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ModelFormatError(
            f"the weights file is not an ImageNet {arch} state dict in torchvision's layout "
            f"(missing {len(missing)} keys, e.g. {missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})"
        )
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise ModelFormatError(f"{arch} weights: {key} has shape {tuple(tensor.shape)}, expected {tuple(own[key].shape)}")
    model.load_state_dict(state, strict=False)


def mobilenet_v2(
    num_classes: int, backbone_state: Mapping[str, torch.Tensor] | None = None, **_: object
) -> ClassifierNet:
    tv = tvm.mobilenet_v2(weights=None)
    if backbone_state is not None:
        _load_tv_state(tv, backbone_state, "mobilenet_v2")
    backbone = nn.Sequential(*tv.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Sequential(nn.Linear(1280, 256), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(256, num_classes))
    return ClassifierNet(backbone, head, 1280)


def resnet50(
    num_classes: int,
    backbone_state: Mapping[str, torch.Tensor] | None = None,
    block_variant: str = "v1.5",
    **_: object,
) -> ClassifierNet:
    """``block_variant`` "v1" puts the stride-2 of each stage's first block on its 1x1 conv (the
    original ResNet and Keras' weights); "v1.5" is torchvision's layout (stride on the 3x3)."""
    if block_variant not in ("v1", "v1.5"):
        raise ValueError(f"block_variant must be 'v1' or 'v1.5', not {block_variant!r}")
    tv = tvm.resnet50(weights=None)
    if block_variant == "v1":
        for layer in (tv.layer2, tv.layer3, tv.layer4):
            layer[0].conv1.stride = (2, 2)
            layer[0].conv2.stride = (1, 1)
    if backbone_state is not None:
        _load_tv_state(tv, backbone_state, "resnet50")
    backbone = nn.Sequential(
        tv.conv1, tv.bn1, tv.relu, tv.maxpool,
        *tv.layer1, *tv.layer2, *tv.layer3, *tv.layer4,
        tv.avgpool, nn.Flatten(),
    )
    head = nn.Sequential(
        nn.Linear(2048, 512), nn.ReLU(inplace=True), nn.Dropout(0.4),
        nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Dropout(0.3),
        nn.Linear(256, num_classes),
    )
    return ClassifierNet(backbone, head, 2048)
