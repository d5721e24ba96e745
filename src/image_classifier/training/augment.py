"""The study's augmentation (Keras ``ImageDataGenerator``), applied to cached uint8 images.

Each image gets its own random transform, drawn the way Keras draws it: rotation in
[-rotation, rotation] degrees, vertical shift in [-height_shift, height_shift] x height, horizontal
shift likewise, shear in [-shear, shear] *degrees* (Keras' unit), zoom factors for x and y drawn
independently from [1 - zoom, 1 + zoom], then a horizontal flip with probability 0.5. Pixels are
sampled bilinearly (Keras) or from the nearest pixel (``Augmentation.interpolation``), and the area
outside the image repeats the nearest edge pixel (Keras' ``fill_mode="nearest"``).

Two engines (``Augmentation.engine``):

* ``batched`` (default): builds the N matrices at once and calls ``affine_grid``/``grid_sample``
  once per batch. It reproduces Keras' transform, fill and anisotropic zoom.
* ``torchvision``: ``transforms.v2.RandomAffine`` + ``RandomHorizontalFlip`` image by image, the
  literal torchvision reading; torchvision's affine has one isotropic scale and fills with black.

``bench/augment_speed.py`` times both; the batched engine was the faster one (see its output).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from image_classifier.recipe import Augmentation


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low


def keras_affine_matrices(aug: Augmentation, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random (n, 2, 3) ``affine_grid`` matrices (output -> input, normalised x/y coordinates).

    Keras composes rotation @ shift @ shear @ zoom in (row, column) pixel coordinates centred on
    the image, maps *output* pixels to *input* pixels (scipy's ``affine_transform``), and flips the
    result afterwards. For a square image of side ``size`` a centred pixel offset d is
    ``d * 2 / size`` in ``affine_grid``'s normalised units (``align_corners=False``).
    """
    theta = torch.deg2rad(_uniform(n, -aug.rotation, aug.rotation, generator))
    tx = _uniform(n, -aug.height_shift, aug.height_shift, generator) * size  # rows
    ty = _uniform(n, -aug.width_shift, aug.width_shift, generator) * size  # columns
    shear = torch.deg2rad(_uniform(n, -aug.shear, aug.shear, generator))
    zx = _uniform(n, 1 - aug.zoom, 1 + aug.zoom, generator)
    zy = _uniform(n, 1 - aug.zoom, 1 + aug.zoom, generator)
    flip = (torch.rand(n, generator=generator) < 0.5) if aug.horizontal_flip else torch.zeros(n, dtype=torch.bool)

    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    zero, one = torch.zeros_like(shear), torch.ones_like(shear)
    shear_m = torch.stack([torch.stack([one, -torch.sin(shear)], -1), torch.stack([zero, torch.cos(shear)], -1)], -2)
    zoom_m = torch.diag_embed(torch.stack([zx, zy], -1))
    linear = rot @ shear_m @ zoom_m  # (n, 2, 2) in (row, col)
    shift = (rot @ torch.stack([tx, ty], -1).unsqueeze(-1)).squeeze(-1)  # rotation @ shift matrix
    # Flip after the transform = read output column -c instead of c.
    linear[:, :, 1] = torch.where(flip.unsqueeze(-1), -linear[:, :, 1], linear[:, :, 1])
    # (row, col) -> (x, y) = (col, row): swap both axes of the linear part and the shift.
    linear_xy = linear.flip(-1).flip(-2)
    shift_xy = shift.flip(-1) * (2.0 / size)
    return torch.cat([linear_xy, shift_xy.unsqueeze(-1)], -1).float()


class Augmenter:
    """``augmenter(uint8 batch, generator) -> float32 batch in [0, 1]``, one random transform per image."""

    def __init__(self, aug: Augmentation) -> None:
        self.aug = aug
        self._tv = None
        if aug.engine == "torchvision":
            transforms = [v2.RandomAffine(
                degrees=aug.rotation, translate=(aug.width_shift, aug.height_shift),
                scale=(1 - aug.zoom, 1 + aug.zoom), shear=(-aug.shear, aug.shear),
                interpolation=v2.InterpolationMode(aug.interpolation),
            )]
            if aug.horizontal_flip:
                transforms.append(v2.RandomHorizontalFlip())
            self._tv = v2.Compose(transforms)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError("augment expects a (N, 3, H, W) uint8 batch")
        n, _, h, w = images.shape
        if self._tv is not None:
            # torchvision draws from the global RNG: seed it from ours, inside fork_rng so the
            # caller's global RNG state is left exactly as it was.
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = torch.stack([self._tv(img) for img in images])
            return out.float().div_(255.0)
        if h != w:
            raise ValueError(f"the batched engine expects square images, got {h}x{w}")
        matrices = keras_affine_matrices(self.aug, n, h, generator)
        x = images.float()
        grid = F.affine_grid(matrices, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode=self.aug.interpolation, padding_mode="border", align_corners=False)
        return out.div_(255.0)

