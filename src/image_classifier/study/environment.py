"""Where a study's figures were measured: the machine and the library versions, for the report.

Latencies and training times only mean something next to the CPU, core count and thread count
that produced them, so every report ends with this table (``Study.environment``).
"""
from __future__ import annotations

import os
import platform
from typing import Any

import matplotlib
import torch

from image_classifier.machine import cpu_model
from image_classifier.results import Environment
from image_classifier.saved_model import library_versions


def machine_info() -> dict[str, Any]:
    """CPU, cores, torch threads, platform, memory and GPU, as flat report rows."""
    info: dict[str, Any] = {
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


def describe_environment() -> Environment:
    return Environment(machine=machine_info(), versions=versions())
