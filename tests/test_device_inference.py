"""``--device`` for everything that predicts: predict, evaluate, serve and ``load_model(device=...)``.

A tiny CNN really trained (calibrated, with its "none of these" rule) on red vs blue pictures,
through the package as a user trains. On this machine: ``--device cuda`` without a GPU, a
malformed name and ``--backend onnx --device cuda`` are clear errors (exit 2) before any model is
read; ``cpu`` and ``auto`` (the CPU here) give exactly the probabilities of the network computed
by hand. Tests marked ``cuda`` run where PyTorch sees a GPU (conftest skips them, with the reason,
elsewhere): the GPU's probabilities match the CPU's, the server answers from the GPU, Grad-CAM
works there and the report's machine section names the GPU. They are kept to seconds.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import image_classifier as ic
import train_helpers
from train_helpers import green_noise
from image_classifier.cli import main
from image_classifier.device import resolve_device
from image_classifier.errors import OptionError
from image_classifier.inference.backends import TorchBackend, backend_device
from image_classifier.inference.calibration import card_temperature
from image_classifier.inference.kinds import open_classifier
from image_classifier.inference.ensemble import write_ensemble
from image_classifier.inference.explain import explain
from image_classifier.results import Study
from image_classifier.runs import BACKEND_RECORD_NAME
from image_classifier.saved_model import load_module, read_card
from image_classifier.serve import create_app
from image_classifier.serve.store import ModelStore
from image_classifier.study.environment import describe_environment, machine_info

TINY = train_helpers.TINY
NO_GPU = not torch.cuda.is_available()
# A GPU that no machine has: an error everywhere, with or without CUDA.
MISSING_GPU = "cuda:99"


pytestmark = pytest.mark.usefixtures("tiny_arch")


@pytest.fixture(scope="module")
def trained(tiny_arch, tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, model directory): red vs blue, 16 + 16 images of 32 px, trained 3 epochs."""
    return train_helpers.train_red_blue(tmp_path_factory.mktemp("device"), 16)


def _images(data: Path) -> list[Path]:
    return sorted(data.rglob("*.jpg"))[::3]


def by_hand(model_dir: Path, images: list[Path]) -> np.ndarray:
    """The probabilities as the saved network computes them, on the CPU, without the inference stack:
    ``softmax(net(preprocess(x)) / T)`` with the card's temperature."""
    card = read_card(model_dir)
    clf = open_classifier(model_dir, "torch")
    net = load_module(model_dir, card).eval()
    with torch.inference_mode():
        logits = net(torch.from_numpy(clf.preprocess_array(images)))
    return torch.softmax(logits / card_temperature(card), dim=1).numpy()


def _predict_json(argv: list[str], capsys) -> dict:
    code = main(["predict", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


# ---- errors a user can act on, before anything is loaded -----------------------------------------

@pytest.mark.parametrize("command", [["predict", "no-such-model", "x.jpg"],
                                     ["evaluate", "no-such-model", "no-such-data"],
                                     ["serve", "no-such-model"]])
@pytest.mark.parametrize("device", [MISSING_GPU, *(["cuda"] if NO_GPU else [])])
def test_a_gpu_that_is_not_there_is_an_error_before_the_model_is_read(command, device, capsys):
    # The model path does not exist: the device error comes first, so nothing was read.
    assert main([*command, "--device", device]) == 2
    err = capsys.readouterr().err
    assert f"error: --device {device}:" in err
    assert "no-such-model" not in err
    if device == "cuda":
        assert "no CUDA GPU is available" in err and "--device cpu" in err


@pytest.mark.parametrize("command", [["predict", "no-such-model", "x.jpg"],
                                     ["evaluate", "no-such-model", "no-such-data"],
                                     ["serve", "no-such-model"]])
@pytest.mark.parametrize("device", ["gpu", "cpu:0", "cuda:x"])
def test_a_malformed_device_is_an_error(command, device, capsys):
    assert main([*command, "--device", device]) == 2
    assert "expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_onnx_on_a_gpu_is_refused_and_auto_means_the_cpu_for_it(backend, capsys):
    assert main(["predict", "no-such-model", "x.jpg", "--backend", backend, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "run on the CPU only" in err and "--backend torch" in err
    with pytest.raises(OptionError, match="CPU only"):
        backend_device(backend, torch.device("cuda", 0))
    assert backend_device(backend, "auto") == torch.device("cpu")
    assert backend_device(backend, "cpu") == torch.device("cpu")
    with pytest.raises(OptionError, match="expected"):
        backend_device(backend, "gpu")


def test_the_store_refuses_a_missing_gpu_before_loading(trained):
    _, model_dir = trained
    with pytest.raises(OptionError, match=r"cuda:99"):
        ModelStore.from_paths([model_dir], device=MISSING_GPU)


def test_help_names_what_auto_does(capsys):
    for command in ("predict", "evaluate", "serve"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--device {auto,cpu,cuda,cuda:N}" in text
        assert "auto (default): the first CUDA GPU when PyTorch sees one, else the CPU" in text


# ---- the CPU: the same answers as before ---------------------------------------------------------

def test_cpu_and_auto_predict_what_the_network_computes(trained, capsys):
    data, model_dir = trained
    images = _images(data)
    expected = by_hand(model_dir, images)
    assert card_temperature(read_card(model_dir)) != 1.0  # calibrated: the temperature is part of it

    cpu = ic.load_model(model_dir, backend="torch", device="cpu")
    assert cpu.device == torch.device("cpu")
    np.testing.assert_allclose(cpu.predict_proba(images), expected, rtol=0, atol=1e-6)

    auto = ic.load_model(model_dir, backend="torch")  # device="auto"
    assert auto.device == resolve_device("auto")
    if NO_GPU:
        np.testing.assert_allclose(auto.predict_proba(images), expected, rtol=0, atol=1e-6)

    argv = [str(model_dir), *map(str, images), "--backend", "torch", "--top-k", "2"]
    for device in (["--device", "cpu"], [] if NO_GPU else ["--device", "cpu"]):
        doc = _predict_json(argv + device, capsys)
        assert doc["device"] == "cpu"
        got = np.array([[next(t["probability"] for t in p["top"] if t["label"] == c) for c in doc["classes"]]
                        for p in doc["predictions"]])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_auto_backend_on_the_cpu_is_chosen_as_before(trained):
    _, model_dir = trained
    clf = ic.load_model(model_dir, device="cpu")
    assert clf.device == torch.device("cpu") and clf.backend_name == "torch"
    # The CPU's own reason (no model.onnx: torch is all there is), not the GPU's.
    assert clf.backend_reason.startswith("auto: the only backend available") and "GPU" not in clf.backend_reason


def test_rejection_and_explanations_on_the_cpu_device(trained):
    data, model_dir = trained
    clf = ic.load_model(model_dir, backend="torch", device="cpu")
    assert clf.predict(_images(data)[:2]) != ["unknown", "unknown"]
    noise = green_noise(6)
    _, details = clf.predict_details(noise)
    assert all("unknown" in d for d in details)
    cam = explain(clf, _images(data)[0])
    assert cam.heatmap is not None and cam.heatmap.shape == (32, 32) and 0 <= cam.heatmap.min() <= cam.heatmap.max() <= 1


def test_ensemble_members_follow_the_device(trained, tmp_path):
    data, model_dir = trained
    ens_dir = write_ensemble(tmp_path / "ensemble", {"a": model_dir, "b": model_dir}, {"a": 0.5, "b": 0.5})
    ens = ic.load_model(ens_dir, backend="torch", device="cpu")
    assert ens.device == torch.device("cpu")
    assert all(clf.device == torch.device("cpu") for _, clf, _ in ens.members)
    np.testing.assert_allclose(ens.predict_proba(_images(data)), by_hand(model_dir, _images(data)), atol=1e-6)
    with pytest.raises(OptionError):
        ic.load_model(ens_dir, backend="onnx", device="cuda")


def test_evaluate_records_the_device(trained, tmp_path, capsys):
    data, model_dir = trained
    out = tmp_path / "eval"
    assert main(["evaluate", str(model_dir), str(data), "--no-speed", "--device", "cpu", "--backend", "torch",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "device: cpu" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["machine"]["device"] == "cpu"
    assert "--device cpu" in metrics["command"]
    assert "| device | cpu |" in (out / "report.md").read_text()
    # A metrics.json written before the device row existed still loads and reports.
    del metrics["machine"]["device"]
    (out / "metrics.json").write_text(json.dumps(metrics))
    study = Study.load(out)
    assert "device" not in study.environment.machine and study.environment.machine["cpu"]


def test_the_machine_section_defaults_to_the_cpu():
    assert describe_environment().machine["device"] == "cpu"
    assert machine_info("cpu")["device"] == "cpu"
    assert list(machine_info())[0] == "device"  # the report's first machine row


def test_serve_on_the_cpu_device_answers_as_before(trained):
    data, model_dir = trained
    image = _images(data)[0]
    app = create_app(model_dir, backend="torch", device="cpu")
    store = app.extensions["image_classifier"]
    assert store.device == torch.device("cpu")
    response = app.test_client().post("/api/predict", data={"file": (io.BytesIO(image.read_bytes()), "x.jpg")})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    expected = by_hand(model_dir, [image])[0]
    classes = read_card(model_dir).classes
    np.testing.assert_allclose([body["probabilities"][c] for c in classes], expected, atol=1e-5)
    store.close()


# ---- a GPU (skipped here) ------------------------------------------------------------------------

@pytest.mark.cuda
def test_predict_on_the_gpu_matches_the_cpu(trained, capsys):
    data, model_dir = trained
    images = _images(data)
    cpu = ic.load_model(model_dir, backend="torch", device="cpu").predict_proba(images)

    gpu = ic.load_model(model_dir, backend="torch", device="cuda")
    assert gpu.device.type == "cuda" and next(gpu.module.parameters()).is_cuda
    assert isinstance(gpu.backend, TorchBackend) and torch.cuda.get_device_name(0) in gpu.backend.describe()
    probs = gpu.predict_proba(images)
    assert isinstance(probs, np.ndarray) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, cpu, rtol=0, atol=1e-3)

    bf16 = ic.load_model(model_dir, backend="torch-bf16", device="cuda:0")
    assert "autocast" in bf16.backend.describe()
    assert (bf16.predict_proba(images).argmax(1) == cpu.argmax(1)).all()

    # Calibration and "none of these" decide the same on both devices.
    noise = green_noise(6)
    _, on_cpu = ic.load_model(model_dir, backend="torch", device="cpu").predict_details(noise)
    _, on_gpu = gpu.predict_details(noise)
    assert [d["unknown"] for d in on_gpu] == [d["unknown"] for d in on_cpu]

    doc = _predict_json([str(model_dir), *map(str, images[:3]), "--device", "cuda"], capsys)
    assert doc["device"] == "cuda:0" and doc["backend"] == "torch"


@pytest.mark.cuda
def test_auto_on_the_gpu_is_torch_there_without_measuring(trained, tmp_path):
    import shutil

    _, model_dir = trained
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / BACKEND_RECORD_NAME).unlink(missing_ok=True)
    clf = ic.load_model(copy)  # backend auto, device auto
    assert clf.backend_name == "torch" and clf.device.type == "cuda" and "GPU" in clf.backend_reason
    assert not (copy / BACKEND_RECORD_NAME).exists()


@pytest.mark.cuda
def test_grad_cam_on_the_gpu_matches_the_cpu(trained):
    data, model_dir = trained
    image = _images(data)[0]
    on_cpu = explain(ic.load_model(model_dir, backend="torch", device="cpu"), image)
    on_gpu = explain(ic.load_model(model_dir, backend="torch", device="cuda"), image)
    assert on_gpu.target == on_cpu.target
    np.testing.assert_allclose(on_gpu.heatmap, on_cpu.heatmap, atol=1e-2)


@pytest.mark.cuda
def test_serve_answers_from_the_gpu(trained):
    data, model_dir = trained
    image = _images(data)[0]
    app = create_app(model_dir, backend="torch", device="cuda")
    store = app.extensions["image_classifier"]
    try:
        assert store.get().classifier.device.type == "cuda"
        response = app.test_client().post("/api/predict?explain=1",
                                          data={"file": (io.BytesIO(image.read_bytes()), "x.jpg")})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        classes = read_card(model_dir).classes
        np.testing.assert_allclose([body["probabilities"][c] for c in classes], by_hand(model_dir, [image])[0],
                                   atol=1e-3)
        assert body["explanation"]["method"] == "grad-cam"
    finally:
        store.close()


@pytest.mark.cuda
def test_the_machine_section_names_the_gpu(trained, tmp_path, capsys):
    name = torch.cuda.get_device_name(0)
    assert describe_environment(torch.device("cuda", 0)).machine["device"] == f"cuda:0 ({name})"
    data, model_dir = trained
    out = tmp_path / "eval"
    assert main(["evaluate", str(model_dir), str(data), "--no-speed", "--device", "cuda", "--out", str(out)]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["machine"]["device"] == f"cuda:0 ({name})"
    assert metrics["models"][0]["backend"]["name"] == "torch"
