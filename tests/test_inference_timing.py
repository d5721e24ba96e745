"""measure_backends: the figures compare's report shows for each backend."""
from __future__ import annotations

import numpy as np

from export_helpers import make_model_dir, photo
from image_classifier.export.pipeline import ExportOptions, export_model
from image_classifier.inference.timing import SpeedConfig, interleaved_times, measure_backends

TINY = SpeedConfig(warmup=1, repeats=4, e2e_repeats=3, throughput_batch=4, throughput_repeats=2, min_repeats=1)


def test_interleaved_times_settles_each_function_then_times_a_block():
    import itertools
    import time

    calls: list[str] = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              warmup=1, repeats=5, block=2, settle_s=0.01)
    assert {k: len(v) for k, v in times.items()} == {"a": 5, "b": 5}
    assert calls[:2] == ["a", "b"]  # warm-up
    # Then rounds of: many untimed "a" (10 ms of them), 2 timed "a", the same for "b"; the last
    # round times only what is left (1 call each).
    runs = [(name, sum(1 for _ in group)) for name, group in itertools.groupby(calls[2:])]
    assert [name for name, _ in runs] == ["a", "b"] * 3
    assert all(count > 2 for _, count in runs)

    # Calls slower than settle_s need no settling: only the timed calls run after the first round.
    slow: list[str] = []
    interleaved_times({"a": lambda: (slow.append("a"), time.sleep(0.002)),
                       "b": lambda: (slow.append("b"), time.sleep(0.002))},
                      warmup=0, repeats=4, block=2, settle_s=0.001)
    assert slow[-4:] == ["a", "a", "b", "b"]


def test_measure_backends_reports_each_backend(tmp_path):
    model_dir = make_model_dir(tmp_path, "alexnet_like")
    export_model(model_dir, ExportOptions(measure=False))
    image = tmp_path / "big.jpg"
    photo(np.random.default_rng(0), 1, size=(640, 480)).save(image, quality=90)

    report = measure_backends(model_dir, ["onnx", "onnx-int8"], sample_image=image, config=TINY)
    assert report["baseline"] == "torch" and report["architecture"] == "alexnet_like"
    assert list(report["backends"]) == ["torch", "onnx"]  # the baseline always runs
    assert "model.int8.onnx" in report["skipped"]["onnx-int8"]
    for name, res in report["backends"].items():
        assert res["latency_repeats"] == 4 and res["e2e_repeats"] == 3
        assert 0 < res["latency_ms_p50"] <= res["latency_ms_p95"]
        assert res["e2e_latency_ms_p50"] > 0 and res["throughput_ips"] > 0 and res["throughput_batch"] == 4
        assert res["max_abs_diff_vs_torch"] <= 1e-4
    torch_res, onnx_res = report["backends"]["torch"], report["backends"]["onnx"]
    assert torch_res["speedup_latency"] == 1.0
    assert np.isclose(onnx_res["speedup_latency"], torch_res["latency_ms_p50"] / onnx_res["latency_ms_p50"])
    assert np.isclose(onnx_res["speedup_throughput"], onnx_res["throughput_ips"] / torch_res["throughput_ips"])
    assert report["fastest"] == min(report["backends"], key=lambda n: report["backends"][n]["latency_ms_p50"])
    assert report["machine"]["threads"] >= 1
