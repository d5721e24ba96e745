"""A tiny architecture for training tests, registered the way a fifth real one would be.

``register_tiny()`` is all it takes to add an architecture: a builder that returns a
``ClassifierNet`` (backbone blocks + head), a preprocessing and a default recipe. Tests use it
through the ``tiny_arch`` fixture (conftest.py), which also removes it from the registry after the
module. Subprocess tests call it in the child too (``child_prelude()``), since a fresh process only
knows the built-in architectures.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from image_classifier.models.net import ClassifierNet
from image_classifier.models.registry import ArchSpec, get_arch, register_arch
from image_classifier.preprocessing import Preprocessing
from image_classifier.recipe import Phase, Recipe

TINY = "tiny_test_cnn"
TESTS_DIR = Path(__file__).resolve().parent


def tiny_cnn(num_classes: int, backbone_state=None, width: int = 8, **_: object) -> ClassifierNet:
    # Like the study's simple CNN: conv blocks then a Flatten of a spatial map into a dense layer
    # (the channels_last gradient path), plus BatchNorm (the frozen-BN path).
    backbone = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 0-3
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),  # 4-6
        nn.MaxPool2d(2), nn.Flatten(),  # 7-8
    )
    features = 2 * width * 8 * 8
    head = nn.Sequential(nn.Linear(features, 32), nn.ReLU(inplace=True), nn.Dropout(0.2), nn.Linear(32, num_classes))
    return ClassifierNet(backbone, head, features)


def tiny_recipe() -> Recipe:
    return Recipe(phases=[Phase("scratch", epochs=6, lr=3e-3, trainable_from=0)], batch_size=8,
                  early_stopping_patience=4, plateau_patience=2)


def two_phase_recipe(head_epochs: int = 3, top_epochs: int = 3) -> Recipe:
    """Head only, then the top conv block + head: both phases train on cached activations."""
    return Recipe(phases=[Phase("frozen", epochs=head_epochs, lr=1e-2, trainable_from=None),
                          Phase("finetune", epochs=top_epochs, lr=1e-3, trainable_from=4)],
                  batch_size=8, early_stopping_patience=4, plateau_patience=2, feature_views=2)


def register_tiny() -> str:
    try:
        get_arch(TINY)
    except KeyError:
        register_arch(ArchSpec(TINY, tiny_cnn, Preprocessing(32), tiny_recipe, description="test-only tiny CNN"))
    return TINY


def child_prelude() -> str:
    """Python source a subprocess runs first so that it knows the tiny architecture."""
    return f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import train_helpers; train_helpers.register_tiny()\n"


def python() -> str:
    return sys.executable


def train_red_blue(root: Path, per_class: int) -> tuple[Path, Path]:
    """(data folder, model directory): the tiny CNN trained 3 epochs through ``image_classifier.train``
    (calibrated, with its rejection rule) on ``per_class`` red and as many blue pictures, half of
    them for validation. Needs the ``tiny_arch`` fixture."""
    # Imported here: the subprocesses that import this module (child_prelude) need neither.
    import image_classifier as ic
    from conftest import make_image_folder

    data = make_image_folder(root / "data", {"red": per_class, "blue": per_class})
    ic.train(data, arch=TINY, out=root / "model", epochs=3, cache=False, progress=False, val=0.5, test=0.1)
    return data, root / "model"


def green_noise(n: int, seed: int = 0) -> list[Image.Image]:
    """A third kind of picture, neither red nor blue: green noise (32 x 32), what a red/blue model's
    "none of these" rule should turn away."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(np.dstack([rng.integers(0, 80, (32, 32)), rng.integers(120, 256, (32, 32)),
                                       rng.integers(0, 80, (32, 32))]).astype(np.uint8)) for _ in range(n)]
