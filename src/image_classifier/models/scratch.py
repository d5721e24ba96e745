"""The study's two from-scratch CNNs, as its README draws them, with Keras' defaults where it is silent.

Keras defaults used: 3x3 kernels with ``valid`` padding (no padding), stride 1, ReLU, max-pool 2x2
stride 2, Glorot-uniform kernels and zero biases. ``simple_cnn`` has no pooling and no dropout, so
its flattened 122x122x128 map feeds the dense layer: ~244 M parameters, almost all in one matrix.
"""
from __future__ import annotations

from torch import nn

from image_classifier.models.net import ClassifierNet


def _keras_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_out(size: int, kernel: int = 3, pool: bool = False) -> int:
    size = size - kernel + 1
    return size // 2 if pool else size


def simple_cnn(num_classes: int, input_size: int = 128, **_: object) -> ClassifierNet:
    size = input_size
    for _i in range(3):
        size = _conv_out(size)
    features = 128 * size * size
    backbone = nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, 3), nn.ReLU(inplace=True),
        nn.Flatten(),
    )
    head = nn.Sequential(nn.Linear(features, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes))
    net = ClassifierNet(backbone, head, features)
    _keras_init(net)
    return net


def alexnet_like(num_classes: int, input_size: int = 224, **_: object) -> ClassifierNet:
    size = input_size
    for _i in range(3):
        size = _conv_out(size, pool=True)
    features = 256 * size * size
    backbone = nn.Sequential(
        nn.Conv2d(3, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    head = nn.Sequential(
        nn.Linear(features, 512), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(512, num_classes)
    )
    net = ClassifierNet(backbone, head, features)
    _keras_init(net)
    return net
