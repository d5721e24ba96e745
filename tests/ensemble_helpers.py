"""Two tiny networks that each see one half of the picture, and images whose class shows in one
half only (for the ensemble tests): each model is right on about half of the images and unsure on
the rest, so their average is the known best mix.

``register_halves()`` adds the two architectures to the registry; use the ``halves`` fixture
(conftest.py), which also removes them afterwards. Subprocesses run ``CHILD_PRELUDE`` first.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch import nn

from image_classifier.cli import main
from image_classifier.models.net import ClassifierNet
from image_classifier.models.registry import ArchSpec, register_arch
from image_classifier.preprocessing import Preprocessing
from image_classifier.recipe import Augmentation, Phase, Recipe

TESTS_DIR = Path(__file__).resolve().parent
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 220)}
ARCHS = ("tiny_half_left", "tiny_half_right")


# ---- tiny models that each see one half ------------------------------------------------------------

class Half(nn.Module):
    """Keeps one half of the picture (the other half is what the other model sees)."""

    def __init__(self, side: str) -> None:
        super().__init__()
        self.side = side

    def forward(self, x):
        w = x.shape[-1] // 2
        return x[..., :w] if self.side == "left" else x[..., w:]


def _half_net(side: str):
    def build(num_classes: int, backbone_state=None) -> ClassifierNet:
        backbone = nn.Sequential(
            nn.Sequential(Half(side), nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        )
        return ClassifierNet(backbone, nn.Linear(6, num_classes), 6)

    return build


def _recipe() -> Recipe:
    return Recipe(phases=[Phase("scratch", epochs=12, lr=2e-2, trainable_from=0)], batch_size=8, precision="fp32",
                  early_stopping_patience=12, augmentation=Augmentation(rotation=0, width_shift=0, height_shift=0,
                                                                        shear=0, zoom=0, horizontal_flip=False))


def register_halves() -> None:
    # Two input sizes: the ensemble decodes each image once per size.
    register_arch(ArchSpec(ARCHS[0], _half_net("left"), Preprocessing(32), _recipe), replace=True)
    register_arch(ArchSpec(ARCHS[1], _half_net("right"), Preprocessing(24), _recipe), replace=True)


CHILD_PRELUDE = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import ensemble_helpers; "
                 "ensemble_helpers.register_halves()\n")


def half_image(colour: tuple[int, int, int], side: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """The class colour on one half, grey noise on the other."""
    a = rng.integers(100, 156, (size, size, 3)).astype(np.int16)
    w = size // 2
    part = (slice(None), slice(0, w)) if side == "left" else (slice(None), slice(w, size))
    a[part] = np.asarray(colour) + rng.integers(-20, 21, (size, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def make_halves(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    """root/<class>/*.png: each picture shows its class colour on one half (alternating sides)."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            half_image(colour, "left" if i % 2 == 0 else "right", rng).save(root / name / f"{name}_{i:03d}.png")
    return root


def compare_halves(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    """``compare`` of the two half models on ``data`` (the CLI, in this process); returns its argv."""
    argv = ["compare", str(data), "--models", ",".join(ARCHS), "--out", str(out), "--seed", "1", "--val", "0.3",
            "--test", "0.3", "--speed-repeats", "2", "--cache-dir", str(cache), "--no-progress", "--no-faces", *extra]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # as on an idle machine (see test_compare)
        assert main(argv) == 0
    return argv
