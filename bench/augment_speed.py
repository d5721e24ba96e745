"""Time the two augmentation engines on the same uint8 batches (images/s, median of repeats).

    .venv/bin/python bench/augment_speed.py [--size 224] [--batch 32] [--repeats 15]

"batched": one affine_grid/grid_sample call per batch (Keras' transform, edge fill);
"torchvision": transforms.v2.RandomAffine + RandomHorizontalFlip per image (the literal reading).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from image_classifier.recipe import Augmentation
from image_classifier.runtime import configure
from image_classifier.training.augment import Augmenter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    configure()
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    rates = {}
    for engine in ("batched", "torchvision"):
        aug = Augmenter(Augmentation(engine=engine))
        indices = torch.arange(args.batch)
        aug(images, 0, indices, "epoch", 0)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            aug(images, 0, indices, "epoch", 0)
            times.append(time.perf_counter() - t0)
        rates[engine] = args.batch / statistics.median(times)
        print(f"{engine:12s} {rates[engine]:8.0f} images/s  (median of {args.repeats} batches of {args.batch} at {args.size}px)")
    print(f"batched / torchvision: {rates['batched'] / rates['torchvision']:.1f}x")


if __name__ == "__main__":
    main()
