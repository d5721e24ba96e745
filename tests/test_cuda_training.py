"""Training on a CUDA GPU (run where PyTorch sees one; conftest skips them with the reason elsewhere).

What a user moving a run to a GPU expects: mixed precision is on and recorded (bf16 where the GPU
has it; fp16 with a gradient scaler elsewhere), the model trained there is saved with CPU tensors
and loads and predicts on a machine without a GPU, a transfer model's cached activations work on
the GPU, and the GPU draws the same augmentations and dropout masks as the CPU (they come from
(seed, epoch, sample index), not from a device's generator), so an fp32 run on the GPU ends close
to the CPU's. Kept to seconds: tiny synthetic pictures.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import image_classifier as ic
from conftest import make_image_folder
from ddp_child import register as register_ddp_archs
from image_classifier.runs import CARD_NAME
from image_classifier.training import TrainOptions, train_folder
from image_classifier.training import loop

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    register_ddp_archs()
    return make_image_folder(tmp_path_factory.mktemp("cuda") / "data", classes={"a": 14, "b": 14, "c": 14},
                             size=(40, 40))


def _train(folder: Path, out: Path, arch: str, device: str, **options) -> dict:
    train_folder(folder, TrainOptions(arch, out=out, seed=3, cache=False, progress=False, device=device,
                                      checkpoint_every=0.0, **options))
    return json.loads((out / CARD_NAME).read_text())


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    card = json.loads((model_dir / CARD_NAME).read_text())
    return load_file(str(model_dir / card["weights_file"]))


def test_mixed_precision_on_the_gpu_and_the_model_loads_on_the_cpu(folder, tmp_path):
    card = _train(folder, tmp_path / "gpu", "ddp_scratch", "cuda", epochs=4)
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "fp16-mixed"
    assert card["precision"] == expected
    assert card["device"]["device"] == "cuda:0" and card["device"]["name"] == torch.cuda.get_device_name(0)
    assert card["best"]["inference_val_accuracy"] >= 0.8
    assert all(t.device.type == "cpu" for t in _weights(tmp_path / "gpu").values())
    model = ic.load_model(tmp_path / "gpu", device="cpu")
    images = sorted(folder.glob("*/*.jpg"))
    labels = model.predict(images)
    assert sum(lab == p.parent.name for lab, p in zip(labels, images)) >= 0.8 * len(images)


def test_fp16_with_a_gradient_scaler_trains(folder, tmp_path, monkeypatch):
    # The path a GPU without bf16 (before Ampere) takes, forced on this one.
    monkeypatch.setattr(loop, "amp_dtype", lambda device: torch.float16)
    card = _train(folder, tmp_path / "fp16", "ddp_scratch", "cuda", epochs=4)
    assert card["precision"] == "fp16-mixed"
    assert card["best"]["inference_val_accuracy"] >= 0.8


def test_cached_activations_on_the_gpu(folder, tmp_path):
    card = _train(folder, tmp_path / "transfer", "ddp_transfer", "cuda")
    assert [p["name"] for p in card["phases"]] == ["frozen", "finetune"]
    assert card["best"]["inference_val_accuracy"] >= 0.8


def test_fp32_on_the_gpu_ends_close_to_the_cpu(folder, tmp_path):
    # TF32 convolutions (PyTorch's default on the GPU) round differently from the CPU: close, not equal.
    gpu = _train(folder, tmp_path / "g32", "ddp_scratch", "cuda", amp=False)
    cpu = _train(folder, tmp_path / "c32", "ddp_scratch", "cpu")
    assert gpu["precision"] == "fp32" and cpu["precision"] == "fp32"
    wg, wc = _weights(tmp_path / "g32"), _weights(tmp_path / "c32")
    diff = max(float((wg[k] - wc[k]).abs().max()) for k in wg)
    print(f"max |w_gpu - w_cpu| after {len(gpu['history'])} epochs: {diff:.2e}")
    assert diff <= 1e-2
    for hg, hc in zip(gpu["history"], cpu["history"]):
        assert hg["val_loss"] == pytest.approx(hc["val_loss"], abs=1e-2)
