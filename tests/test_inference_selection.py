"""--backend auto: measured once per machine and model, recorded, re-measured when either changes."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import image_classifier
from export_helpers import make_model_dir, photo
from image_classifier.export.pipeline import ExportOptions, export_model
from image_classifier.inference import selection
from image_classifier.inference.kinds import open_classifier
from image_classifier.inference.loading import load_model
from image_classifier.inference.selection import choose_backend, decide
from image_classifier.runs import BACKEND_RECORD_NAME as RECORD_NAME
from image_classifier.saved_model import read_card


@pytest.fixture(autouse=True)
def quiet_cpu(monkeypatch):
    """These tests are about the record, not about the load other processes put on the machine:
    every measurement counts as taken on a quiet CPU unless a test says otherwise."""
    monkeypatch.setattr(selection, "_busy", lambda load_before: "")


@pytest.fixture()
def exported(tmp_path):
    model_dir = make_model_dir(tmp_path, "alexnet_like")
    export_model(model_dir, ExportOptions(measure=False))
    return model_dir


def test_decide_picks_the_lowest_median():
    assert decide({"torch": 12.0, "onnx": 5.5, "torch-bf16": 7.0}) == "onnx"
    assert decide({"torch": 3.0, "onnx": 5.5}) == "torch"
    # Reduced precision has to be clearly faster than the best fp32 backend.
    assert decide({"torch": 12.0, "onnx": 5.0, "onnx-int8": 4.8}) == "onnx"
    assert decide({"torch": 12.0, "onnx": 5.0, "onnx-int8": 3.0}) == "onnx-int8"
    assert decide({"torch": 30.0, "onnx": 18.0, "torch-bf16": 15.0}) == "torch-bf16"


def test_auto_without_export_uses_torch_and_says_how_to_enable_onnx(tmp_path, caplog):
    model_dir = make_model_dir(tmp_path, "alexnet_like")
    with caplog.at_level(logging.INFO):
        clf = load_model(model_dir, backend="auto")
    assert clf.backend_name == "torch"
    assert "image-classifier export" in clf.backend_reason
    assert "backend torch" in caplog.text
    assert not (model_dir / RECORD_NAME).exists()  # nothing to measure, nothing written
    assert not (model_dir / "model.onnx").exists()  # and no silent export


def test_auto_measures_once_then_reads_the_record(exported, caplog):
    with caplog.at_level(logging.INFO):
        first = load_model(exported, backend="auto")
    record_file = exported / RECORD_NAME
    data = json.loads(record_file.read_text())
    (key, record), = data["records"].items()
    assert record["chosen"] == first.backend_name
    assert set(record["latency_ms_p50"]) >= {"torch", "onnx"}
    assert all(t > 0 for t in record["latency_ms_p50"].values())
    assert record["chosen"] == min(record["latency_ms_p50"], key=record["latency_ms_p50"].get)
    assert record["machine"]["cpu"] and record["machine"]["threads"] >= 1
    assert "just measured" in first.backend_reason
    assert f"backend {first.backend_name}" in caplog.text

    second = load_model(exported, backend="auto")
    assert second.backend_name == first.backend_name
    assert "recorded in backend.json" in second.backend_reason
    assert json.loads(record_file.read_text()) == data  # not measured again


def test_auto_measures_again_on_another_machine(exported, monkeypatch):
    choose_backend(exported)
    real = selection.machine_fingerprint
    monkeypatch.setattr(selection, "machine_fingerprint", lambda threads: {**real(threads), "cpu": "Another CPU"})
    choice = choose_backend(exported)
    assert not choice.from_record
    records = json.loads((exported / RECORD_NAME).read_text())["records"]
    assert sorted(r["machine"]["cpu"] for r in records.values()) == sorted([real(1)["cpu"], "Another CPU"])


def test_auto_measures_again_after_a_new_export(exported):
    choose_backend(exported)
    assert choose_backend(exported).from_record
    export_model(exported, ExportOptions(opset=18, measure=False))  # a new model.onnx
    assert not choose_backend(exported).from_record


def test_export_records_the_choice(tmp_path):
    model_dir = make_model_dir(tmp_path, "simple_cnn", input_size=24)
    result = export_model(model_dir)
    timings = result.choice.timings_ms
    assert set(timings) == {"torch", "onnx"} and result.choice.name == min(timings, key=timings.get)  # the faster
    assert load_model(model_dir, backend="auto").backend_name == result.choice.name
    assert "recorded" in load_model(model_dir, backend="auto").backend_reason


def test_auto_leaves_out_a_corrupted_onnx_file(exported, caplog):
    path = exported / "model.onnx"
    path.write_bytes(b"\0" * 100)
    with caplog.at_level(logging.WARNING):
        clf = load_model(exported, backend="auto")
    assert clf.backend_name == "torch"
    assert "leaving out onnx" in caplog.text and "checksum" in caplog.text


def test_reduced_precision_needs_an_accuracy_check(exported):
    names, skipped = selection.candidates(exported, read_card(exported))
    assert "torch-bf16" not in names and "onnx-int8" not in names
    assert "onnx" in names


def test_a_record_that_cannot_be_written_still_chooses(exported, caplog):
    # As root a read-only directory can still be written to; a directory where the record file
    # should be makes writing it fail for anyone (and reading it, which counts as no record).
    (exported / RECORD_NAME).mkdir()
    with caplog.at_level(logging.INFO):
        choice = choose_backend(exported)
    assert set(choice.timings_ms) == {"torch", "onnx"}
    assert choice.name == min(choice.timings_ms, key=choice.timings_ms.get)  # the faster
    assert "could not record" in caplog.text
    assert (exported / RECORD_NAME).is_dir()


def test_a_choice_measured_on_a_busy_cpu_is_measured_again(exported, monkeypatch, caplog):
    monkeypatch.setattr(selection, "_busy", lambda load_before: "load average 5.0 -> 5.2 on 2 logical CPUs")
    with caplog.at_level(logging.WARNING):
        first = choose_backend(exported)
    assert "busy" in caplog.text
    (record,) = json.loads((exported / RECORD_NAME).read_text())["records"].values()
    assert record["provisional"] is True and record["chosen"] == first.name and first.provisional
    monkeypatch.setattr(selection, "_busy", lambda load_before: "")
    second = choose_backend(exported)
    assert not second.from_record  # measured again, now on a quiet CPU
    (record,) = json.loads((exported / RECORD_NAME).read_text())["records"].values()
    assert record["provisional"] is False
    assert choose_backend(exported).from_record


def test_timings_measured_elsewhere_are_recorded_for_auto(exported):
    """compare times the backends itself; record_measurement stores that choice so that serve's
    ``auto`` reuses it without measuring again."""
    figures = {"torch": {"latency_ms_p50": 9.0, "latency_ms_p95": 11.0, "latency_repeats": 30},
               "onnx": {"latency_ms_p50": 4.0, "latency_ms_p95": 5.0, "latency_repeats": 30}}
    choice = selection.record_measurement(exported, read_card(exported), figures, skipped={}, load_before=0.1,
                                          how="in compare's measurement", source="image-classifier compare")
    assert choice.name == "onnx" and "in compare's measurement: onnx 4.0 ms, torch 9.0 ms" in choice.reason
    (record,) = json.loads((exported / RECORD_NAME).read_text())["records"].values()
    assert record["source"] == "image-classifier compare" and record["latency_ms_p95"]["torch"] == 11.0
    again = choose_backend(exported)
    assert again.from_record and again.name == "onnx" and again.timings_ms == {"torch": 9.0, "onnx": 4.0}


def test_load_model_resolves_auto_by_default(exported):
    """``image_classifier.load_model(dir)`` is ``backend="auto"``: the choice measured here (and
    recorded), then the model opened on it; the classifier the measurement opened is the one kept."""
    first = image_classifier.load_model(exported)
    assert first.backend_reason.startswith("auto: ") and "just measured" in first.backend_reason
    (record,) = json.loads((exported / RECORD_NAME).read_text())["records"].values()
    assert first.backend_name == record["chosen"]
    if first.backend_name == "onnx":
        assert first._module is None  # the module the measurement loaded is let go
    again = image_classifier.load_model(exported, threads=1)
    assert again.backend_name == first.backend_name and "recorded in backend.json" in again.backend_reason
    pictures = [photo(np.random.default_rng(5), i % 3) for i in range(4)]
    np.testing.assert_allclose(again.predict_proba(pictures), first.predict_proba(pictures), atol=1e-4)


def test_open_classifier_takes_concrete_backends_only(exported):
    with pytest.raises(ValueError, match="resolve it with image_classifier.load_model"):
        open_classifier(exported, "auto")
    clf = open_classifier(exported, "onnx", threads=1)
    assert clf.backend_name == "onnx" and clf.backend_reason == "requested" and clf.backend.threads == 1
    assert not (exported / RECORD_NAME).exists()  # a concrete backend measures nothing
