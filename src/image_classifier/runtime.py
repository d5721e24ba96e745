"""Process-wide performance settings: allocator and threads.

Why this exists: with glibc's default malloc, the large activation buffers of a CNN forward pass are
served by mmap and handed back to the OS after every batch, so every batch pays page faults to get
them again. Measured on this project's 2-core machines, batch-32 inference ran 2.8x (MobileNetV2)
to 3.6x (ResNet-50) slower than with the thresholds raised. Users will not set MALLOC_* variables,
so the tool does the equivalent with mallopt() once at start-up.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

import torch

log = logging.getLogger(__name__)

# glibc <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_configured = False


def tune_allocator() -> bool:
    """Keep freed heap memory in the process instead of returning it to the OS after each batch.

    Returns True when glibc accepted the settings (False on musl, macOS, Windows: nothing to do).
    """
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # No mmap-backed chunks (M_MMAP_THRESHOLD is capped at 32 MiB, smaller than a ResNet-50 batch's
    # activations, so raising it is not enough) and never trim the top of the heap.
    ok_mmap = mallopt(_M_MMAP_MAX, 0) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return ok_mmap and ok_trim


def configure(num_threads: int | None = None) -> None:
    """Apply allocator and thread settings once per process (idempotent)."""
    global _configured
    if _configured:
        return
    _configured = True
    if tune_allocator():
        log.debug("glibc malloc tuned: no mmap chunks, no trimming")

    if num_threads is None:
        env = os.environ.get("IMAGE_CLASSIFIER_THREADS")
        num_threads = int(env) if env else None
    if num_threads:
        torch.set_num_threads(num_threads)
    log.debug("torch threads: %d", torch.get_num_threads())
