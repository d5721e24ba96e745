"""Machine facts: read from the machine itself, the same wherever they are used."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import onnxruntime
import pytest
import torch

from image_classifier import machine


def test_cpu_model_is_the_model_name_line_of_cpuinfo():
    cpuinfo = Path(machine.CPUINFO)
    if not cpuinfo.is_file():
        assert machine.cpu_model() == (platform.processor() or platform.machine())
        return
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(errors="replace").splitlines()
             if line.startswith("model name")]
    assert machine.cpu_model() == (names[0] if names else platform.processor() or platform.machine())


@pytest.mark.skipif(not hasattr(os, "getloadavg"), reason="no load average on this OS")
def test_load_average_is_the_one_minute_figure():
    before = os.getloadavg()[0]
    got = machine.load_average()
    after = os.getloadavg()[0]
    assert min(before, after) <= got <= max(before, after)


def test_bf16_support_is_what_onednn_reports():
    assert machine.bf16_supported() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_fingerprint_names_the_machine_and_the_runtimes():
    fp = machine.machine_fingerprint(3)
    assert fp == {"cpu": machine.cpu_model(), "logical_cpus": os.cpu_count(), "threads": 3,
                  "platform": f"{platform.system()} {platform.machine()}",
                  "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
