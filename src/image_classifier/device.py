"""Which device a command computes on: ``--device auto|cpu|cuda|cuda:N``, checked in one place.

``auto`` (the default everywhere) is the first CUDA GPU when PyTorch sees one, else the CPU, as
fastai, Keras and Ultralytics do without being asked. Asking for ``cuda`` on a machine without one
is an error that says so, never a silent fall back to the CPU: a user who asked for the GPU and got
a ten times slower run would not know why.

On CUDA, training and inference use mixed precision: bfloat16 where the GPU computes it natively
(Ampere and later), else float16 with a gradient scaler (:func:`amp_dtype`). Saved models are
always written from CPU tensors, so a model trained on a GPU loads on a machine without one.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from image_classifier.errors import OptionError
from image_classifier.machine import cpu_model

#: What ``--device`` accepts, for help texts.
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")

#: The share of a GPU's free memory that cached tensors (decoded images, frozen features) may
#: take; the rest is for the network, its activations and the optimizer.
GPU_CACHE_FRACTION = 0.5


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build"
    return (f"this PyTorch is built for CUDA {torch.version.cuda} but sees no GPU "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}; is the NVIDIA driver loaded?)")


def parse_device(spec: str | torch.device | None) -> tuple[str, int | None]:
    """``(kind, index)`` that ``spec`` names, without looking at the machine: ``("auto", None)``,
    ``("cpu", None)``, ``("cuda", None)`` or ``("cuda", N)``; an
    :class:`~image_classifier.errors.OptionError` for anything else."""
    text = (str(spec) if spec is not None else "auto").strip().lower() or "auto"
    match = _SPEC.match(text)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise OptionError(f"--device {spec!r}: expected {DEVICE_CHOICES}")
    return match.group(1), int(match.group(2)) if match.group(2) is not None else None


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` that ``spec`` names; ``auto``/None: ``cuda:0`` when available, else CPU.

    Raises :class:`~image_classifier.errors.OptionError` for a malformed name, for ``cuda`` on a
    machine where PyTorch sees no GPU, and for a GPU index past the last one.
    """
    kind, index = parse_device(spec)
    text = str(spec).strip().lower()
    if kind == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise OptionError(f"--device {text}: no CUDA GPU is available: {_no_cuda_reason()}. "
                          "Use --device cpu, or --device auto to use a GPU only when there is one")
    n = torch.cuda.device_count()
    i = index if index is not None else 0
    if i >= n:
        raise OptionError(f"--device {text}: this machine has {n} CUDA GPU(s), numbered 0 to {n - 1}")
    return torch.device("cuda", i)


def is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in ``dtype`` on ``device``'s kind; ``None``: a disabled context (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for mixed precision on ``device``: bf16 on a GPU that has it, else fp16;
    None on the CPU (whose bf16 use is the recipe's ``precision``, see :mod:`image_classifier.machine`)."""
    if not is_cuda(device):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def free_bytes(device: torch.device) -> int | None:
    """Free memory on a CUDA device now, None on the CPU."""
    if not is_cuda(device):
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def fits_on_device(nbytes: int, device: torch.device, fraction: float = GPU_CACHE_FRACTION) -> bool:
    """Whether a cache of ``nbytes`` may live on ``device``: always on the CPU; on a GPU when it
    takes at most ``fraction`` of the memory free now."""
    free = free_bytes(device)
    return True if free is None else nbytes <= fraction * free


@dataclass(frozen=True)
class DeviceInfo:
    """What a card and a report record about the device that computed: ``cuda:0`` and its name."""

    device: str
    name: str
    memory_gib: float | None = None
    capability: str | None = None
    cuda: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def describe_device(device: torch.device) -> DeviceInfo:
    if not is_cuda(device):
        return DeviceInfo(device="cpu", name=cpu_model())
    props = torch.cuda.get_device_properties(device)
    return DeviceInfo(device=str(device), name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                      capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
