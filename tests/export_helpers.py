"""Small real models and real image files for the export and inference tests."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from image_classifier.models.registry import build_model, get_arch
from image_classifier.saved_model import save_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLASSES = ("red", "green", "blue")
# The from-scratch CNNs take their input size as a builder option (their dense layer depends on it);
# the ImageNet backbones end in global average pooling and accept any size.
SIZED_ARCHS = ("simple_cnn", "alexnet_like")


def spread_outputs(module: torch.nn.Module, input_size: int, seed: int = 0) -> torch.nn.Module:
    """Give a freshly initialised network varied outputs: with its initial BatchNorm statistics a
    random MobileNetV2 saturates and answers the same for every picture, and a parity test on
    constant outputs would prove nothing. So BatchNorm statistics are estimated on a few pictures
    (as after training) and the last layer is scaled up so probabilities differ visibly."""
    from image_classifier.export.verify import synthetic_images

    gen = torch.Generator().manual_seed(seed)
    images = synthetic_images(8, seed=seed + 100)
    batch = torch.stack([torch.from_numpy(np.asarray(im.resize((input_size, input_size)), dtype=np.float32))
                         .permute(2, 0, 1) / 255.0 for im in images])
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration pass
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
        module.train()
        module(batch)
        last = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(8.0)
    return module.eval()


def make_model_dir(root: Path, arch: str, *, input_size: int = 32, classes=CLASSES, seed: int = 0,
                   pretrained_weights: Path | None = None) -> Path:
    """A saved model of ``arch`` (random weights unless ``pretrained_weights``) at a small input size."""
    torch.manual_seed(seed)
    options = {"input_size": input_size} if arch in SIZED_ARCHS else {}
    if pretrained_weights is not None:
        module, options = build_model(arch, len(classes), pretrained=True, weights=pretrained_weights, options=options)
        module.eval()
    else:
        module, options = build_model(arch, len(classes), options=options)
        spread_outputs(module, input_size, seed)
    prep = dataclasses.replace(get_arch(arch).preprocessing, input_size=input_size)
    card = {"architecture": arch, "classes": list(classes), "preprocessing": prep.to_dict(), "arch_options": options}
    return save_model(module, card, root / f"{arch}-{seed}")


def photo(rng: np.random.Generator, colour: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A noisy picture dominated by one channel (class = which channel)."""
    w, h = size
    arr = rng.uniform(0, 90, (h, w, 3))
    arr[..., colour] += rng.uniform(120, 165)
    yy, xx = np.mgrid[0:h, 0:w]
    arr += ((xx + yy) % 17)[..., None] * 2.0
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def write_labelled_folder(root: Path, per_class: int, *, seed: int = 0, classes=CLASSES,
                          size: tuple[int, int] = (96, 72)) -> Path:
    """root/<class>/<n>.jpg, real JPEG files; class i's pictures are dominated by colour channel i."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            photo(rng, index % 3, size).save(root / name / f"{n:03d}.jpg", quality=90)
    return root
