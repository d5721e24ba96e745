"""Facts about the machine this process runs on: CPU model, load, native bfloat16, a fingerprint.

One module so that every figure that depends on the machine (timings in a report, the backend
``auto`` chose, whether training runs in bf16) names the machine the same way.
"""
from __future__ import annotations

import os
import platform
from typing import Any

import onnxruntime as ort
import torch

CPUINFO = "/proc/cpuinfo"


def cpu_model() -> str:
    """The CPU's marketing name (``AMD EPYC 7B13``) from ``/proc/cpuinfo``; elsewhere (macOS,
    Windows) what :mod:`platform` knows, at worst the architecture (``x86_64``)."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (runnable threads, averaged), or None where the OS has none.

    Compared with the number of logical CPUs it says whether other processes competed for the
    cores while something was timed."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # AttributeError: Windows has no getloadavg
        return None


def bf16_supported() -> bool:
    """True when this CPU computes bfloat16 natively (oneDNN has AVX512-BF16 or AMX kernels);
    elsewhere PyTorch emulates it and bf16 is slower than fp32, for training and inference alike."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def machine_fingerprint(threads: int) -> dict[str, Any]:
    """What makes a timing transferable to another run: CPU, cores, the threads one forward pass
    uses, platform and the runtimes' versions. Equal fingerprints: the timing still holds."""
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
    }
