"""Where a study's figures were measured: the machine and the library versions, for the report.

Latencies and training times only mean something next to the CPU, core count and thread count
that produced them, so every report ends with this table (``Study.environment``). Its ``device``
row names what computed: ``cpu``, or the GPU (``cuda:0 (NVIDIA H100 80GB HBM3)``) when a command
ran with ``--device cuda`` (or ``auto`` on a machine with one). Reports written before that row
existed load unchanged: the machine section is a flat dict and they simply lack the row.
"""
from __future__ import annotations

import os
import platform
from typing import Any

import matplotlib
import torch

from image_classifier.device import describe_device, is_cuda
from image_classifier.machine import cpu_model
from image_classifier.results import Environment
from image_classifier.saved_model import library_versions


def device_row(device: torch.device | str | None = None) -> str:
    """The report's ``device`` row: ``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if not is_cuda(device):
        return "cpu"
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return f"{device} ({describe_device(device).name})"


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """The device that computed, CPU, cores, torch threads, platform, memory and GPU, as flat
    report rows. ``device`` (default: the CPU) is where the study's networks ran."""
    info: dict[str, Any] = {
        "device": device_row(device),
        "cpu": cpu_model(),
        "logical cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory"] = f"{pages * page_size / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    """The versions that decide the numbers (those a saved model records), plus matplotlib's."""
    return {**library_versions(), "matplotlib": matplotlib.__version__}


def describe_environment(device: torch.device | str | None = None) -> Environment:
    """The machine and versions of a study whose networks computed on ``device`` (default: the CPU)."""
    return Environment(machine=machine_info(device), versions=versions())
