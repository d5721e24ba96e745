"""Backends behind load_model: same answers, lazy PyTorch module, thread safety, the web server."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest

from export_helpers import CLASSES, make_model_dir, write_labelled_folder
from image_classifier.export.pipeline import ExportOptions, export_model
from image_classifier.inference import BACKENDS
from image_classifier.inference.options import AnswerOptions
from image_classifier.optionspec import add_arguments
from image_classifier.inference.backends import OnnxBackend, TorchBackend
from image_classifier.inference.loading import load_model
from image_classifier.machine import bf16_supported


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    model_dir = make_model_dir(root, "mobilenet_v2", input_size=48)
    export_model(model_dir, ExportOptions(measure=False))
    data = write_labelled_folder(root / "data", per_class=4)
    return model_dir, sorted(data.rglob("*.jpg"))


def test_backend_names_are_shared_with_the_cli():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser, AnswerOptions)
    assert parser.parse_args([]).backend == "auto"
    assert parser.parse_args(["--backend", "onnx"]).backend == "onnx"
    with pytest.raises(SystemExit):
        parser.parse_args(["--backend", "tensorrt"])
    assert set(BACKENDS) == {"auto", "torch", "torch-bf16", "onnx", "onnx-int8"}


def test_unknown_backend_is_refused(exported):
    model_dir, _ = exported
    with pytest.raises(ValueError, match="unknown backend"):
        load_model(model_dir, backend="tensorrt")


def test_onnx_backend_answers_like_torch_on_jpeg_files(exported):
    model_dir, files = exported
    torch_clf = load_model(model_dir, backend="torch")
    onnx_clf = load_model(model_dir, backend="onnx")
    assert isinstance(torch_clf.backend, TorchBackend) and isinstance(onnx_clf.backend, OnnxBackend)
    assert onnx_clf.backend_name == "onnx" and onnx_clf.backend_reason == "requested"
    expected = torch_clf.predict_proba(files)
    got = onnx_clf.predict_proba(files, batch_size=5)
    assert np.abs(got - expected).max() <= 1e-4
    assert onnx_clf.predict(files) == torch_clf.predict(files)
    assert onnx_clf.classes == list(CLASSES)
    assert "ONNX Runtime" in onnx_clf.backend.describe()


def test_onnx_classifier_builds_the_pytorch_module_only_when_asked(exported):
    model_dir, files = exported
    clf = load_model(model_dir, backend="onnx")
    clf.predict_proba(files[:2])
    assert clf._module is None  # serving with ONNX Runtime holds one copy of the weights
    assert clf.module.training is False and clf._module is not None  # still there for FLOPs, training
    assert clf.arch == "mobilenet_v2"


def test_onnx_session_threads_are_set(exported):
    model_dir, _ = exported
    clf = load_model(model_dir, backend="onnx", threads=1)
    assert clf.backend.threads == 1
    assert clf.backend.session.get_session_options().intra_op_num_threads == 1


def test_concurrent_predictions_are_correct(exported):
    model_dir, files = exported
    expected = load_model(model_dir, backend="torch").predict_proba(files)
    for backend in ("onnx", "torch"):
        clf = load_model(model_dir, backend=backend)
        results: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                for _ in range(3):
                    results[i] = clf.predict_proba([files[i]])[0]
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(files))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        got = np.stack([results[i] for i in range(len(files))])
        assert np.abs(got - expected).max() <= 1e-4, backend


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bfloat16")
def test_bf16_backend_stays_close_and_keeps_fp32_module(exported):
    import torch

    model_dir, files = exported
    fp32 = load_model(model_dir, backend="torch")
    bf16 = load_model(model_dir, backend="torch-bf16")
    assert bf16.backend_name == "torch-bf16"
    assert next(bf16.module.parameters()).dtype == torch.float32  # the copy is bf16, not the module
    got, expected = bf16.predict_proba(files), fp32.predict_proba(files)
    # Really bfloat16 (not exact), and close enough to keep the answers of this test model, whose
    # sharpened random head makes it far more sensitive to rounding than a trained one.
    assert np.abs(got - expected).max() > 1e-6
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.75


def test_with_backend_shares_the_module(exported):
    model_dir, files = exported
    clf = load_model(model_dir, backend="torch")
    other = clf.with_backend("onnx")
    assert other.backend_name == "onnx" and other.module is clf.module
    assert np.abs(other.predict_proba(files[:3]) - clf.predict_proba(files[:3])).max() <= 1e-4


def test_web_server_answers_identically_with_both_backends(exported):
    serve = pytest.importorskip("image_classifier.serve")
    model_dir, files = exported
    answers = {}
    for backend in ("torch", "onnx"):
        app = serve.create_app([model_dir], backend=backend)
        client = app.test_client()
        answers[backend] = []
        for path in files[:4]:
            response = client.post("/api/predict", data={"file": (io.BytesIO(path.read_bytes()), path.name)},
                                   content_type="multipart/form-data")
            assert response.status_code == 200, response.get_json()
            answers[backend].append(response.get_json())
    for a, b in zip(answers["torch"], answers["onnx"]):
        assert a["label"] == b["label"]
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert a["probabilities"].keys() == b["probabilities"].keys()
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) <= 1e-4


def test_numpy_preprocessing_equals_the_torch_preprocessing(exported):
    import torch

    from image_classifier.export.verify import synthetic_images
    from image_classifier.inference.preprocess import images_to_array
    from image_classifier.preprocessing import Preprocessing

    images = synthetic_images(3) + [synthetic_images(1, seed=9)[0].convert("L")]
    for prep in (Preprocessing(48, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), Preprocessing(40),
                 Preprocessing(40, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "center_crop")):
        array = images_to_array(prep, images)
        assert array.dtype == np.float32 and array.flags.c_contiguous
        assert np.array_equal(array, prep(images).numpy())  # bit for bit
    model_dir, files = exported
    clf = load_model(model_dir, backend="onnx")
    assert isinstance(clf.preprocess(files[:2]), torch.Tensor)
    assert np.array_equal(clf.preprocess(files[:2]).numpy(), clf.preprocess_array(files[:2]))
