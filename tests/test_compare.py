"""End to end: ``compare`` and ``evaluate`` on a tiny synthetic dataset with two tiny architectures.

Everything is real: images written with Pillow, networks trained by the real trainer, the real CLI
parser, files read back from disk. The assertions are consistency properties that a wrong
implementation breaks (confusion matrix vs accuracy vs per-image predictions vs CSV vs JSON,
selection by validation, McNemar counts from the predictions).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest
from torch import nn

from conftest import CHROMIUM, make_image_folder, rendered_ink
from image_classifier.cli import main
from image_classifier.models.net import ClassifierNet
from image_classifier.models.registry import ArchSpec, register_arch, unregister_arch
from image_classifier.preprocessing import Preprocessing
from image_classifier.recipe import Augmentation, Phase, Recipe
from image_classifier.results import COLUMNS
from image_classifier.runs import resolve_model_dir

CLASSES = {"<script>": 14, "b b": 14, "c": 14}
ARCHS = ("tiny_cmp_a", "tiny_cmp_b")


def _conv_net(width: int):
    def build(num_classes: int, backbone_state=None) -> ClassifierNet:
        backbone = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        )
        return ClassifierNet(backbone, nn.Linear(2 * width, num_classes), 2 * width)

    return build


def _recipe(phases: list[Phase]) -> Recipe:
    return Recipe(phases=phases, batch_size=16, precision="fp32",
                  augmentation=Augmentation(rotation=0, width_shift=0.05, height_shift=0.05, shear=0, zoom=0))


@pytest.fixture(scope="module")
def tiny_archs():
    register_arch(ArchSpec("tiny_cmp_a", _conv_net(8), Preprocessing(32),
                           lambda: _recipe([Phase("scratch", epochs=4, lr=5e-3, trainable_from=0)])), replace=True)
    # Two phases, so the training curves show a phase boundary.
    register_arch(ArchSpec("tiny_cmp_b", _conv_net(4), Preprocessing(24),
                           lambda: _recipe([Phase("frozen", epochs=2, lr=5e-3, trainable_from=None),
                                            Phase("finetune", epochs=2, lr=2e-3, trainable_from=0)])), replace=True)
    yield
    for name in ARCHS:
        unregister_arch(name)


@pytest.fixture(scope="module")
def compared(tiny_archs, tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    data = make_image_folder(root / "data", CLASSES, size=(40, 30))
    run = root / "runs" / "tiny"
    cache = root / "cache"
    argv = ["compare", str(data), "--models", ",".join(ARCHS), "--out", str(run), "--seed", "3",
            "--val", "0.25", "--test", "0.3", "--speed-repeats", "3", "--cache-dir", str(cache), "--no-progress"]
    with pytest.MonkeyPatch.context() as mp:
        # Time the backends as on an idle machine: on a busy CPU the choice is provisional and the
        # next load measures again (test_inference_selection covers that), so serve's choice
        # could not be compared with the report's.
        mp.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        code = main(argv)
    assert code == 0
    return {"data": data, "run": run, "cache": cache, "argv": argv}


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_every_artefact_is_written(compared):
    run = compared["run"]
    for name in ("comparison.csv", "metrics.json", "report.html", "report.md", "predictions.csv", "split.csv",
                 "plots/summary.png", "plots/reliability.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    metrics = _metrics(run)
    for m in metrics["models"]:
        arch = m["name"]
        assert (run / "models" / arch / "model.json").is_file()
        assert (run / f"plots/{arch}-confusion.png").is_file()
        assert (run / f"plots/{arch}-training.png").is_file()
        if m["errors"]:
            assert (run / m["plots"]["errors"]).is_file()
    assert (run / "best").is_symlink()
    assert resolve_model_dir(run) == (run / "models" / metrics["selection"]["best"]).resolve()


def test_numbers_are_consistent(compared):
    run = compared["run"]
    metrics = _metrics(run)
    test_size = sum(metrics["data"]["split"]["sizes"]["test"].values())
    with (run / "split.csv").open() as fh:
        assert test_size == sum(1 for row in csv.DictReader(fh) if row["split"] == "test")
    with (run / "predictions.csv").open() as fh:
        preds = list(csv.DictReader(fh))
    rows = {r["model"]: r for r in csv.DictReader((run / "comparison.csv").open())}
    assert list(next(iter(rows.values()))) == list(COLUMNS)
    correct = {}
    for m in metrics["models"]:
        test = m["test"]
        cm = np.array(test["confusion_matrix"])
        assert cm.sum() == test_size == test["n"]
        assert math.isclose(np.trace(cm) / cm.sum(), test["accuracy"])
        assert [c["support"] for c in test["per_class"]] == cm.sum(axis=1).tolist()
        assert test["accuracy_ci"][0] <= test["accuracy"] <= test["accuracy_ci"][1]
        mine = [p for p in preds if p["model"] == m["name"]]
        assert len(mine) == test_size
        correct[m["name"]] = np.array([p["correct"] == "True" for p in mine])
        assert math.isclose(correct[m["name"]].mean(), test["accuracy"])
        assert len(m["errors"]) == test_size - np.trace(cm)
        # CSV and JSON agree.
        row = rows[m["name"]]
        assert float(row["test_accuracy"]) == test["accuracy"]
        assert float(row["test_accuracy_ci_low"]) == test["accuracy_ci"][0]
        assert float(row["macro_f1"]) == test["macro_f1"]
        assert float(row["log_loss"]) == test["log_loss"]
        assert float(row["ece"]) == test["ece"]
        assert int(row["params"]) == m["speed"]["params"] > 0
        assert float(row["latency_ms_p50"]) == m["speed"]["latency_ms_p50"] > 0
        assert float(row["latency_ms_p95"]) >= float(row["latency_ms_p50"])
        assert float(row["throughput_ips"]) > 0
        assert float(row["train_seconds"]) == m["training"]["seconds"] > 0
        assert float(row["size_mb"]) > 0
        # The test split played no part in training: the card counts train + val images only.
        card = json.loads((run / m["model_dir"] / "model.json").read_text())
        sizes = metrics["data"]["split"]["sizes"]
        assert card["data"]["train_images"] == sum(sizes["train"].values())
        assert card["data"]["val_images"] == sum(sizes["val"].values())
        assert card["split_manifest_sha256"] == metrics["data"]["split"]["manifest_sha256"]
        for epoch in m["training"]["history"]:
            assert {"epoch", "phase", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                    "seconds"} <= set(epoch)
    assert {e["phase"] for e in metrics["models"][1]["training"]["history"]} == {"frozen", "finetune"}

    # Selection by validation (accuracy, then loss), never by test.
    models = metrics["models"]
    expected = min(models, key=lambda m: (-m["validation"]["accuracy"], m["validation"]["loss"]))["name"]
    assert metrics["selection"]["best"] == expected
    assert [r["model"] for r in rows.values() if r["selected"] == "True"] == [expected]

    # McNemar counts from the per-image predictions; the exact p-value is a two-sided binomial test.
    (pair,) = metrics["pairwise"]
    a, b = correct[pair["model_a"]], correct[pair["model_b"]]
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert (pair["a_only_correct"], pair["b_only_correct"]) == (a_only, b_only)
    expected_p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    assert pair["p_value"] == pytest.approx(expected_p)


def test_backends_are_exported_measured_and_recorded_for_serve(compared):
    """compare exports every (small) model to a verified model.onnx, times ONNX Runtime against eager
    PyTorch, shows it in every artefact, and leaves the choice `serve --backend auto` will read."""
    from image_classifier import load_model

    run = compared["run"]
    metrics = _metrics(run)
    rows = {r["model"]: r for r in csv.DictReader((run / "comparison.csv").open())}
    md = (run / "report.md").read_text()
    html_text = (run / "report.html").read_text()
    assert "Inference backends" in md and "Inference backends" in html_text
    for m in metrics["models"]:
        model_dir = run / m["model_dir"]
        assert (model_dir / "model.onnx").is_file()
        assert m["export"]["exported"] and m["export"]["onnx_size_bytes"] == (model_dir / "model.onnx").stat().st_size
        torch_b, onnx_b = m["backends"]["torch"], m["backends"]["onnx"]
        for b in (torch_b, onnx_b):
            assert 0 < b["latency_ms_p50"] <= b["latency_ms_p95"]
            assert b["e2e_latency_ms_p50"] > 0 and b["throughput_ips"] > 0
        assert onnx_b["speedup_latency"] == pytest.approx(torch_b["latency_ms_p50"] / onnx_b["latency_ms_p50"])
        assert onnx_b["max_abs_diff_vs_torch"] < 1e-4
        row = rows[m["name"]]
        assert float(row["onnx_latency_ms_p50"]) == onnx_b["latency_ms_p50"]
        assert float(row["onnx_throughput_ips"]) == onnx_b["throughput_ips"]
        assert float(row["onnx_speedup"]) == onnx_b["speedup_latency"]
        # What the report says serve will use is what serve's own resolution of "auto" gives.
        serving = m["serve_backend"]
        assert row["serve_backend"] == serving["name"] in ("torch", "onnx")
        clf = load_model(model_dir, backend="auto")
        assert serving["provisional"] is False and clf.backend_name == serving["name"]
        assert f"{m['name']}: serve uses {serving['name']}" in md
    best = metrics["selection"]["best"]
    assert (run / "best" / "model.onnx").is_file(), f"the best model {best} must be servable by ONNX Runtime"


def test_large_models_are_not_exported(tmp_path):
    from image_classifier.study.backends import export_for_serving

    info = export_for_serving(tmp_path, 244_000_000)
    assert not info.exported and info.reason.startswith("not exported (976 MB")
    assert not list(tmp_path.iterdir())
    assert export_for_serving(tmp_path, 10, enabled=False).reason == "not exported (--no-export)"


def test_report_is_self_contained_and_escaped(compared):
    text = (compared["run"] / "report.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", text)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]+)"', text))
    metrics = _metrics(compared["run"])
    assert f"Served model (chosen on the training and validation images): {metrics['selection']['best']}" in text
    assert "image-classifier compare" in text and "--seed 3" in text
    assert "McNemar" in text and "Duplicates" in text


def test_each_model_is_calibrated_on_validation_and_serves_calibrated_probabilities(compared, tmp_path):
    """compare fits each model's temperature on the validation split right after training; the
    test metrics are those of the calibrated probabilities, with the uncalibrated ones beside."""
    import shutil

    from image_classifier.evaluate.metrics import log_loss
    from image_classifier.inference.loading import load_model

    run, data = compared["run"], compared["data"]
    metrics = _metrics(run)
    with (run / "split.csv").open() as fh:
        split_rows = list(csv.DictReader(fh))
    val_n = sum(r["split"] == "val" for r in split_rows)
    test_rows = [r for r in split_rows if r["split"] == "test"]
    rows = {r["model"]: r for r in csv.DictReader((run / "comparison.csv").open())}
    assert metrics["timings"]["trust_seconds"] > 0
    for m in metrics["models"]:
        card = json.loads((run / "models" / m["name"] / "model.json").read_text())
        cal = card["calibration"]
        assert cal["fitted_on"] == "validation" and cal["images"] == val_n and cal["method"] == "temperature"
        assert m["calibration"]["temperature"] == cal["temperature"]
        row, test = rows[m["name"]], m["test"]
        for key in ("ece", "log_loss", "ece_uncalibrated", "log_loss_uncalibrated"):
            assert float(row[key]) == pytest.approx(test[key])
        # The uncalibrated figures are those of the same network without its temperature.
        plain = tmp_path / m["name"]
        shutil.copytree(run / "models" / m["name"], plain)
        card.pop("calibration")
        (plain / "model.json").write_text(json.dumps(card))
        classes = load_model(plain, backend="torch").classes
        files = [data / r["rel_path"] for r in test_rows]
        labels = np.array([classes.index(r["class"]) for r in test_rows])
        before = load_model(plain, backend="torch").predict_proba(files)
        after = load_model(run / "models" / m["name"], backend="torch").predict_proba(files)
        assert test["log_loss_uncalibrated"] == pytest.approx(log_loss(labels, before), rel=1e-4)
        assert test["log_loss"] == pytest.approx(log_loss(labels, after), rel=1e-4)
        assert (before.argmax(1) == after.argmax(1)).all()
        assert (run / f"plots/{m['name']}-calibration.png").is_file()
    assert 'id="calibration"' in (run / "report.html").read_text()


def test_rerun_with_a_subset_reuses_split_and_decode(compared, capsys):
    run, cache = compared["run"], compared["cache"]
    split_before = (run / "split.csv").read_bytes()
    cached_files = sorted(p for p in cache.rglob("*.npy"))
    assert cached_files, "the first run should have filled the decode cache"
    mtimes = [p.stat().st_mtime_ns for p in cached_files]
    argv = ["compare", str(compared["data"]), "--models", "tiny_cmp_a", "--out", str(run), "--seed", "3",
            "--speed-repeats", "2", "--cache-dir", str(cache), "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "reusing the split" in err
    assert "tiny_cmp_a: temperature" not in err  # a reused model keeps the calibration in its card
    assert (run / "split.csv").read_bytes() == split_before
    assert sorted(p for p in cache.rglob("*.npy")) == cached_files
    assert [p.stat().st_mtime_ns for p in cached_files] == mtimes
    metrics = _metrics(run)
    assert [m["name"] for m in metrics["models"]] == ["tiny_cmp_a"]
    assert metrics["selection"]["best"] == "tiny_cmp_a"


def test_evaluate_matches_compare_on_the_test_split(compared, tmp_path, capsys):
    run, data = compared["run"], compared["data"]
    metrics = _metrics(run)
    best = metrics["selection"]["best"]
    out = tmp_path / "ev"
    assert main(["evaluate", str(run), str(data), "--split", str(run / "split.csv"), "--subset", "test",
                 "--out", str(out), "--no-speed"]) == 0
    ev = json.loads((out / "metrics.json").read_text())
    (entry,) = ev["models"]
    ref = next(m for m in metrics["models"] if m["name"] == best)
    assert entry["test"]["confusion_matrix"] == ref["test"]["confusion_matrix"]
    assert entry["test"]["accuracy"] == ref["test"]["accuracy"]
    assert (out / "report.html").is_file() and (out / f"plots/{best}-confusion.png").is_file()
    # The default backend is "auto" and the output says which one ran and why.
    assert entry["backend"]["name"] in ("torch", "onnx") and entry["backend"]["reason"].startswith("auto:")
    printed = capsys.readouterr().out
    assert f"backend: {entry['backend']['name']} (auto:" in printed
    # The same calibrated model on the same test images: the same figures, before and after.
    temperature = ref["calibration"]["temperature"]
    assert f"calibration: temperature {temperature:.2f}" in printed
    for key in ("log_loss", "ece", "log_loss_uncalibrated", "ece_uncalibrated"):
        assert entry["test"][key] == pytest.approx(ref["test"][key], rel=1e-3, abs=1e-5)  # auto: maybe ONNX
    assert entry["calibration"] == ref["calibration"]

    # ONNX Runtime scores the test split exactly as PyTorch does, and is timed as the backend in use.
    out_onnx = tmp_path / "ev-onnx"
    assert main(["evaluate", str(run), str(data), "--split", str(run / "split.csv"), "--subset", "test",
                 "--out", str(out_onnx), "--backend", "onnx"]) == 0
    assert "backend: onnx (requested)" in capsys.readouterr().out
    (onnx_entry,) = json.loads((out_onnx / "metrics.json").read_text())["models"]
    assert onnx_entry["test"]["confusion_matrix"] == ref["test"]["confusion_matrix"]
    assert onnx_entry["speed"]["backend"] == "onnx" and onnx_entry["speed"]["latency_ms_p50"] > 0
    assert "ONNX Runtime" in onnx_entry["speed"]["backend_description"]

    # The whole folder includes the training images: the report says so.
    out2 = tmp_path / "ev2"
    assert main(["evaluate", str(run), str(data), "--out", str(out2), "--no-speed"]) == 0
    ev2 = json.loads((out2 / "metrics.json").read_text())
    assert ev2["models"][0]["test"]["n"] == sum(CLASSES.values())
    assert any("training or validation split" in w for w in ev2["alerts"])
    assert "training or validation split" in (out2 / "report.html").read_text()
    capsys.readouterr()


def test_evaluate_unknown_class_is_a_clear_error(compared, tmp_path, capsys):
    data = make_image_folder(tmp_path / "other", {"c": 3, "zebra": 3}, size=(40, 30))
    code = main(["evaluate", str(compared["run"]), str(data), "--out", str(tmp_path / "x"), "--no-speed"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not trained on: 'zebra'" in err and "Traceback" not in err


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM, reason="no chromium")
def test_compare_report_renders_in_chromium(compared, tmp_path):
    assert rendered_ink(compared["run"] / "report.html", tmp_path / "shot.png", "1200,2400") > 0.02


def test_reproduce_command_and_argument_parsing(compared):
    from image_classifier.errors import ImageClassifierError
    from image_classifier.study.options import parse_set, parse_weights

    metrics = _metrics(compared["run"])
    cmd = metrics["command"]
    # The run made its own split with --seed 3: the command rebuilds it from the data.
    assert "--seed 3" in cmd and "--val 0.25 --test 0.3" in cmd and "--split" not in cmd
    assert "tiny_cmp_a" in cmd
    assert parse_weights(["resnet50=w/r.pth"]) == {"resnet50": Path("w/r.pth")}
    with pytest.raises(ImageClassifierError, match="ARCH=PATH"):
        parse_weights(["resnet50"])
    assert parse_set(["batch_size=16", "alexnet_like:phases.0.epochs=3"]) == {
        "*": {"batch_size": "16"}, "alexnet_like": {"phases.0.epochs": "3"}}


def test_compare_rejects_bad_arguments(tiny_archs, tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", {"a": 4, "b": 4})
    assert main(["compare", str(data), "--models", "tiny_cmp_a,nope", "--out", str(tmp_path / "r")]) == 2
    assert "unknown architecture(s) nope" in capsys.readouterr().err
    assert main(["compare", str(data), "--models", "tiny_cmp_a", "--weights", "resnet50=x.pth",
                 "--out", str(tmp_path / "r")]) == 2
    assert "which no model in --models uses" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ---- issue 14, "why": the misclassified test images are explained --------------------------------

def test_misclassified_test_images_get_their_overlays(compared):
    run = compared["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["timings"]["explain_seconds"] >= 0
    errors = [(m["name"], e) for m in metrics["models"] for e in m["errors"]]
    for name, e in errors:
        overlay = run / e["overlay"]
        assert e["overlay"].startswith(f"explanations/{name}/") and overlay.is_file()
        with Image.open(overlay) as im, Image.open(e["path"]) as photo:
            assert im.format == "PNG" and im.size == photo.size  # the photo's size (under 512 px)
    for m in metrics["models"]:  # (a rerun with fewer models leaves the others' folders, like their models)
        folder = run / "explanations" / m["name"]
        on_disk = sorted(p.relative_to(run).as_posix() for p in folder.glob("*.png")) if folder.is_dir() else []
        assert on_disk == sorted(e["overlay"] for e in m["errors"])  # only the misclassified ones
    print(f"{len(errors)} overlays in {metrics['timings']['explain_seconds']:.2f} s; "
          f"compare took {metrics['timings']['total_seconds']:.1f} s")
