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
from image_classifier.training.seeding import derive_seed, sample_uniforms


#: Uniforms one image's transform uses: rotation, two shifts, shear, two zooms, flip.
DRAWS = 7


def _scaled(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return u.to(torch.float64) * (high - low) + low


def keras_affine_matrices(aug: Augmentation, uniforms: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 2, 3) ``affine_grid`` matrices (output -> input, normalised x/y coordinates) from an
    (n, DRAWS) tensor of uniforms in [0, 1), one row per image.

    Keras composes rotation @ shift @ shear @ zoom in (row, column) pixel coordinates centred on
    the image, maps *output* pixels to *input* pixels (scipy's ``affine_transform``), and flips the
    result afterwards. For a square image of side ``size`` a centred pixel offset d is
    ``d * 2 / size`` in ``affine_grid``'s normalised units (``align_corners=False``).
    """
    u = uniforms.cpu()
    theta = torch.deg2rad(_scaled(u[:, 0], -aug.rotation, aug.rotation))
    tx = _scaled(u[:, 1], -aug.height_shift, aug.height_shift) * size  # rows
    ty = _scaled(u[:, 2], -aug.width_shift, aug.width_shift) * size  # columns
    shear = torch.deg2rad(_scaled(u[:, 3], -aug.shear, aug.shear))
    zx = _scaled(u[:, 4], 1 - aug.zoom, 1 + aug.zoom)
    zy = _scaled(u[:, 5], 1 - aug.zoom, 1 + aug.zoom)
    flip = (u[:, 6] < 0.5) if aug.horizontal_flip else torch.zeros(u.shape[0], dtype=torch.bool)

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
    """``augmenter(uint8 batch, seed, indices, *tags) -> float32 batch in [0, 1]``: one random
    transform per image, drawn from (seed, tags, that image's index in the training set) alone
    (:func:`~image_classifier.training.seeding.sample_uniforms`), so an image is augmented the same
    whichever batch, process or device it is in."""

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

    def __call__(self, images: torch.Tensor, seed: int, indices: torch.Tensor, *tags: object) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError("augment expects a (N, 3, H, W) uint8 batch")
        n, _, h, w = images.shape
        if indices.shape[0] != n:
            raise ValueError(f"{indices.shape[0]} sample indices for a batch of {n} images")
        if self._tv is not None:
            # torchvision draws from the global RNG: seed it per image from ours, inside fork_rng so
            # the caller's global RNG state is left exactly as it was.
            out = []
            with torch.random.fork_rng(devices=[]):
                for img, i in zip(images, indices.tolist()):
                    torch.manual_seed(derive_seed(seed, "augment", *tags, int(i)))
                    out.append(self._tv(img))
            return torch.stack(out).float().div_(255.0)
        if h != w:
            raise ValueError(f"the batched engine expects square images, got {h}x{w}")
        uniforms = sample_uniforms(seed, indices.cpu(), DRAWS, "augment", *tags)
        matrices = keras_affine_matrices(self.aug, uniforms, h).to(images.device, non_blocking=True)
        x = images.float()
        grid = F.affine_grid(matrices, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode=self.aug.interpolation, padding_mode="border", align_corners=False)
        return out.div_(255.0)
