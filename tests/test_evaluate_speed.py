"""Size/speed measurements on a small real network (tiny repeat counts: runs in about a second)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from image_classifier.card import ModelCard
from image_classifier.evaluate import speed
from image_classifier.inference.backends import TorchBackend
from image_classifier.inference.classifier import Classifier
from image_classifier.preprocessing import Preprocessing


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class _RecordingBackend:
    """A real :class:`TorchBackend` that also records what it was given (a ``Backend``: the
    Classifier runs any object with ``name``, ``predict_tensor`` and ``describe``)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.inner = TorchBackend(module)
        self.name = self.inner.name
        self.calls: list[tuple] = []  # types and shapes predict_tensor was given

    def predict_tensor(self, batch):
        self.calls.append((type(batch), tuple(batch.shape)))
        return self.inner.predict_tensor(batch)

    def describe(self) -> str:
        return self.inner.describe()


def test_count_parameters_and_trainable():
    net = _Net()
    assert speed.count_parameters(net) == (3 * 8 * 9 + 8 + 8 * 2 + 2,) * 2
    net.conv.requires_grad_(False)
    total, trainable = speed.count_parameters(net)
    assert total == 242 and trainable == 18


def test_flops_counted():
    net = _Net().eval()
    flops = speed.flops_per_image(net, torch.zeros(4, 3, 16, 16))
    # conv: 2 * (8 out channels * 16 * 16 positions * 27 inputs); linear: 2 * 8 * 2.
    assert flops == 2 * 8 * 16 * 16 * 27 + 2 * 8 * 2


def test_dir_size(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_bytes(b"y" * 234)
    assert speed.dir_size_bytes(tmp_path) == 1234


def test_time_calls_respects_budget():
    calls = []
    times = speed.time_calls(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7 and times.shape == (5,)
    times = speed.time_calls(lambda: None, warmup=0, repeats=10_000, time_budget_s=0.0, min_repeats=3)
    assert times.size == 3
    summary = speed.latency_summary(np.array([0.001, 0.002, 0.003]))
    assert summary["p50_ms"] == pytest.approx(2.0) and summary["repeats"] == 3


def test_measure_classifier(tmp_path):
    img = tmp_path / "x.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(img)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"0" * 5000)
    cfg = speed.SpeedConfig(warmup=1, repeats=5, e2e_repeats=3, throughput_batch=4, throughput_repeats=2)
    net = _Net()
    backend = _RecordingBackend(net)
    card = ModelCard(architecture="tiny", classes=["red", "other"], preprocessing=Preprocessing(16).to_dict())
    clf = Classifier(net, ["red", "other"], Preprocessing(16), card, model_dir, backend=backend)
    out = speed.measure_classifier(clf, model_dir=model_dir, sample_image=img, config=cfg)
    # Timed through the backend entry point (predict_tensor), with numpy input as predict gives it:
    # 1 + 5 batch-1 calls, 1 + 2 batch-4 calls, 1 + 3 end-to-end calls.
    shapes = [shape for kind, shape in backend.calls]
    assert all(kind is np.ndarray for kind, _ in backend.calls)
    assert shapes.count((1, 3, 16, 16)) == 6 + 4 and shapes.count((4, 3, 16, 16)) == 3
    assert out["params"] == 242
    assert out["size_bytes"] == 5000
    assert out["input_shape"] == [3, 16, 16]
    assert out["latency_repeats"] == 5 and out["e2e_repeats"] == 3
    assert 0 < out["latency_ms_p50"] <= out["latency_ms_p95"]
    assert out["e2e_latency_ms_p50"] > 0
    assert out["throughput_ips"] > 0
    assert out["flops_per_image"] == 2 * 8 * 16 * 16 * 27 + 2 * 8 * 2
    assert out["backend"] == "torch" and out["backend_description"].startswith("PyTorch ")


def test_trained_parameter_count_follows_the_recipe():
    from image_classifier.models.net import ClassifierNet

    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten())
    net = ClassifierNet(backbone, torch.nn.Linear(4, 2), 4)
    head = 4 * 2 + 2
    second = 4 * 4 * 9 + 4
    recipe = {"phases": [{"trainable_from": None}, {"trainable_from": 1}]}
    assert speed.trained_parameter_count(net, recipe) == head + second
    assert speed.trained_parameter_count(net, {"phases": [{"trainable_from": None}]}) == head
    assert speed.trained_parameter_count(net, {"phases": [{"trainable_from": 0}]}) == (3 * 4 * 9 + 4) + second + head
    assert speed.trained_parameter_count(_Net(), recipe) is None
