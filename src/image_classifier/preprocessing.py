"""How an image becomes a model input. Stored in every model card so a saved model predicts alone.

Two stages, kept apart on purpose: ``resize`` (decode-time, done once per image and cacheable as
uint8) and ``normalize`` (per batch, on tensors). Training caches the first and augments between
the two; prediction runs both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

RESIZE_MODES = ("squash", "center_crop")


@dataclass(frozen=True)
class Preprocessing:
    """Input size, resize mode and per-channel normalisation of one architecture.

    ``squash`` resizes straight to ``input_size`` x ``input_size`` ignoring aspect ratio, which is
    what the study's Keras ``flow_from_directory(target_size=...)`` did; ``center_crop`` scales the
    shorter side to ``input_size`` and crops the centre.
    Pixels are scaled to [0, 1] first, then ``(x - mean) / std``: mean 0 / std 1 is the study's
    plain ``/255`` rescaling.
    """

    input_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize_mode: str = "squash"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, not {self.resize_mode!r}")
        if self.input_size < 8:
            raise ValueError(f"input_size must be at least 8, not {self.input_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            resize_mode=str(data.get("resize_mode", "squash")),
        )

    def resize(self, image: Image.Image) -> Image.Image:
        """Resize a decoded RGB image to the model's input size."""
        size = self.input_size
        if self.resize_mode == "center_crop":
            w, h = image.size
            scale = size / min(w, h)
            new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            return image.crop((left, top, left + size, top + size))
        if image.size == (size, size):
            return image
        # reducing_gap: Pillow first shrinks by an integer factor (fast box filter), then resamples;
        # 3.0 keeps the result indistinguishable from a full bilinear resize.
        return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)

    def to_uint8(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize each image and stack them as a (N, 3, H, W) uint8 tensor."""
        arrays = [np.asarray(self.resize(img.convert("RGB") if img.mode != "RGB" else img)) for img in images]
        batch = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, self.input_size, self.input_size, 3, dtype=torch.uint8)
        return batch.permute(0, 3, 1, 2).contiguous()

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float (N, 3, H, W) -> normalised float32."""
        if batch.dtype == torch.uint8:
            batch = batch.float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        return (batch - mean) / std

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.normalize(self.to_uint8(images))
