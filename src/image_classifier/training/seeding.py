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


def seed_global(seed: int, *tags: object) -> None:
    """Seed the process-global RNGs (torch's is what dropout draws from)."""
    s = derive_seed(seed, *tags)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % (2**32))


# -- per-sample randomness -------------------------------------------------------------------------
# Augmentation and dropout draw their numbers per *sample*, from (run seed, purpose, epoch, sample
# index), through a counter-based hash instead of a sequential generator. A sample's draws then do
# not depend on which process handles it, in which batch, or on which device: one process, two
# processes with half the batch each, or a GPU give the same augmentations and dropout masks.

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32), without overflowing int64."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) of each element of an int64 tensor in [0, 2**32);
    exact integer arithmetic, so the same on every device."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def sample_uniforms(seed: int, indices: torch.Tensor, width: int, *tags: object) -> torch.Tensor:
    """``(len(indices), width)`` float32 uniforms in [0, 1): row i depends only on (seed, tags,
    indices[i]), on the device of ``indices``."""
    base = derive_seed(seed, "sample", *tags)
    idx = indices.to(torch.int64)
    key = hash32(hash32(hash32(idx ^ (base & _M32)) ^ ((base >> 32) & _M32)) + 0x9E3779B9)
    cols = hash32(torch.arange(width, dtype=torch.int64, device=idx.device) * 0x2545F491 + 0x68E31DA4)
    bits = hash32(hash32(key[:, None] ^ cols[None, :]) + key[:, None])
    # 24 bits: every value exactly representable in float32, so the draws are the same in any dtype.
    return (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))
