"""Reproducible randomness: every random stream is seeded from (run seed, purpose, index).

Seeding each stream from its own derived seed, instead of drawing everything from one global
sequence, makes an epoch's shuffling, augmentation and dropout depend only on the run seed and the
epoch number, so a resumed run replays exactly what the uninterrupted run would have done.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed from the run seed and any tags (stable across processes and Python versions)."""
    text = repr((int(seed), *tags)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *tags: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *tags))


def seed_global(seed: int, *tags: object) -> None:
    """Seed the process-global RNGs (torch's is what dropout draws from)."""
    s = derive_seed(seed, *tags)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % (2**32))
