"""Does the exported file compute what PyTorch computes? Checked before export reports success.

Both runtimes get the very same normalised batch (one preprocessing), once image by image at
batch 1 and once as a whole batch (which exercises the dynamic batch dimension). The figure reported
is the largest absolute difference between any two probabilities; fp32 exports fail above 1e-4.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from image_classifier.export.options import FP32_TOLERANCE


@dataclass
class ParityReport:
    max_abs_diff: float
    images: int
    image_source: str  # "synthetic" or where the real images came from
    tolerance: float
    top1_agreement: float  # fraction of images whose most likely class is the same
    batch_sizes: tuple[int, ...]

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "batch_sizes": list(self.batch_sizes), "passed": self.passed}


def synthetic_images(count: int, *, seed: int = 0, size: tuple[int, int] = (320, 240)) -> list[Image.Image]:
    """Photo-like test pictures (smooth colour gradients, shapes and sensor-like noise), different
    from each other so the network's outputs are not all alike. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = []
    for _ in range(count):
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-1.0, 1.0, (3, 2))
        arr = np.stack([base[c] + slope[c, 0] * xx + slope[c, 1] * yy for c in range(3)], axis=-1)
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, min(w, h) / 2)
        disk = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        arr[disk] = rng.uniform(0, 255, 3)
        arr += rng.normal(0, 12, arr.shape)
        images.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB"))
    return images


def check_parity(reference, candidate, images: Sequence[Image.Image], *, preprocessing,
                 tolerance: float = FP32_TOLERANCE, image_source: str = "synthetic") -> ParityReport:
    """Compare two backends (objects with ``predict_tensor``) on ``images``.

    ``reference`` is normally a :class:`~image_classifier.inference.backends.TorchBackend`, the
    candidate an ``OnnxBackend``. ``preprocessing`` turns the PIL images into the shared batch.
    """
    if not images:
        raise ValueError("check_parity needs at least one image")
    batch = preprocessing(list(images))
    ref = reference.predict_tensor(batch)
    # The whole batch at once, and a single image (batch 1), which is what serving sends.
    got_batch = candidate.predict_tensor(batch)
    got_one = candidate.predict_tensor(batch[:1])
    if got_batch.shape != ref.shape:
        raise ValueError(f"output shape {got_batch.shape} differs from PyTorch's {ref.shape}")
    diff = max(float(np.abs(got_batch - ref).max()), float(np.abs(got_one - ref[:1]).max()))
    if not np.all(np.isfinite(got_batch)):
        diff = float("inf")
    agree = float(np.mean(got_batch.argmax(1) == ref.argmax(1)))
    sizes = (len(images), 1) if len(images) > 1 else (1,)
    return ParityReport(diff, len(images), image_source, tolerance, agree, sizes)
