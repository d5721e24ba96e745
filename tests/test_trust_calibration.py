"""Calibration: temperature scaling fitted on validation images (trust.temperature, trust.fit),
stored in the card and applied by every backend (torch, torch-bf16, ONNX), undone exactly for the
"before" metrics, and refused when an exported file's temperature is stale."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch

from export_helpers import CLASSES, make_model_dir, write_labelled_folder
from image_classifier.errors import ModelFormatError
from image_classifier.evaluate.evaluation import DecodeCache, LabelledImage, evaluate_classifier
from image_classifier.evaluate.metrics import expected_calibration_error, log_loss
from image_classifier.export.pipeline import ExportOptions, export_model
from image_classifier.fileio import atomic_write_json
from image_classifier.inference.calibration import rescale, softmax, uncalibrated
from image_classifier.inference.loading import load_model
from image_classifier.inference.onnx_metadata import read_metadata
from image_classifier.models.face_embedding import FaceHead, FacePath
from image_classifier.runs import CARD_NAME
from image_classifier.saved_model import ModelCard, load_module, read_card
from image_classifier.trust.fit import fit_trust
from image_classifier.trust.temperature import MIN_IMAGES, MIN_TEMPERATURE, calibrate, fit_temperature, nll


def _synthetic(t0: float, n: int = 6000, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / t0): the true temperature is t0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 4.0, (n, classes))
    p = softmax(z, t0)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return z, labels


@pytest.mark.parametrize("t0", [2.5, 0.6])
def test_fitting_recovers_a_known_temperature(t0):
    z, y = _synthetic(t0)
    t = fit_temperature(z, y)
    assert abs(t - t0) / t0 < 0.10
    # From log-probabilities (the logits up to a row constant) the fit is the same.
    logp = np.log(softmax(z))
    assert fit_temperature(logp, y) == pytest.approx(t, rel=1e-4)
    fit = calibrate(z, y)
    assert fit.fitted and fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before
    # It is the minimum: a little either side is worse.
    assert nll(z, y, t) < nll(z, y, t * 1.05) and nll(z, y, t) < nll(z, y, t / 1.05)


def test_a_validation_split_without_errors_does_not_drive_the_temperature_to_zero():
    # 58 images, every one right with a clear margin (a face head on its validation faces): the
    # plain NLL keeps falling as T -> 0, so the unregularised fit lands on the lower bound and makes
    # every answer certain; the prior on log T keeps it where one error would not cost without limit.
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 58)
    z = rng.normal(0.0, 0.5, (58, 3))
    z[np.arange(58), y] += 3.0
    assert fit_temperature(z, y, prior_sigma=None) == pytest.approx(MIN_TEMPERATURE, rel=0.05)
    t = fit_temperature(z, y)
    assert 0.25 < t < 1.0  # sharper than the network, not certain
    wrong = np.roll(np.eye(3)[y] * 3.0, 1, axis=1)[:1]  # one confident mistake on the test split
    assert nll(wrong, y[:1], t) < 0.1 * nll(wrong, y[:1], MIN_TEMPERATURE)


def test_too_few_images_keep_temperature_one():
    z, y = _synthetic(3.0, n=MIN_IMAGES - 1)
    fit = calibrate(z, y)
    assert not fit.fitted and fit.temperature == 1.0 and str(MIN_IMAGES) in fit.reason
    assert fit.nll_before == fit.nll_after


def _card(calibration: dict) -> ModelCard:
    return ModelCard.from_json({"architecture": "any", "classes": [], "preprocessing": {}, "calibration": calibration})


def test_calibration_never_changes_the_predicted_class_and_undoes_exactly():
    z, _ = _synthetic(1.0, n=500, classes=5, seed=3)
    for t in (0.3, 1.7, 12.0):
        calibrated = softmax(z, t)
        assert (calibrated.argmax(1) == z.argmax(1)).all()
        back = uncalibrated(calibrated.astype(np.float32), np.full(len(z), t))
        np.testing.assert_allclose(back, softmax(z), atol=2e-5)
        assert (back.argmax(1) == calibrated.argmax(1)).all()
    # Per row: each row undone with its own temperature (a face model's face rows: face_temperature).
    odd = np.arange(len(z)) % 2 == 1
    mixed = np.where(odd[:, None], softmax(z, 0.5), softmax(z, 2.0)).astype(np.float32)
    np.testing.assert_allclose(uncalibrated(mixed, np.where(odd, 0.5, 2.0)), softmax(z), atol=2e-5)
    np.testing.assert_allclose(rescale(softmax(z), 1 / 2.0), softmax(z, 2.0), atol=1e-9)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A real saved MobileNetV2 (48 px) calibrated by fit_trust on 18 real JPEGs, then exported."""
    root = tmp_path_factory.mktemp("calibration")
    model_dir = make_model_dir(root, "mobilenet_v2", input_size=48)
    data = write_labelled_folder(root / "data", per_class=6)
    items = [LabelledImage(p, p.relative_to(data).as_posix(), p.parent.name) for p in sorted(data.rglob("*.jpg"))]
    uncal = load_model(model_dir, backend="torch").predict_proba([it.path for it in items])
    fit = fit_trust(model_dir, items, cache=DecodeCache())
    export_model(model_dir, ExportOptions(measure=False))
    return {"dir": model_dir, "items": items, "fit": fit, "uncal": uncal, "root": root}


def test_fit_trust_writes_the_card(fitted):
    card = read_card(fitted["dir"])
    cal = card.calibration
    assert cal.method == "temperature" and cal.fitted_on == "validation"
    assert cal.images == len(fitted["items"]) and cal.face_temperature is None
    assert cal.temperature != 1.0 and 0.05 <= cal.temperature <= 20.0
    assert cal.nll_after < cal.nll_before
    # The figures are those of the uncalibrated predictions and of the fitted temperature.
    labels = np.array([CLASSES.index(it.class_name) for it in fitted["items"]])
    assert cal.nll_before == pytest.approx(log_loss(labels, fitted["uncal"]), rel=1e-4)
    assert cal.nll_after == pytest.approx(log_loss(labels, rescale(fitted["uncal"], 1 / cal.temperature)),
                                             rel=1e-4)
    assert fitted["fit"].calibration == cal
    # The same pass fits the "none of these" rule (tests/test_rejection.py).
    assert fitted["fit"].rejection["keep"] == 0.95 and fitted["fit"].rejection["fitted_on"] == "validation"
    assert "temperature" in fitted["fit"].line() and "NLL" in fitted["fit"].line()


def test_every_backend_serves_softmax_of_logits_over_t(fitted):
    model_dir, files = fitted["dir"], [it.path for it in fitted["items"]]
    t = read_card(model_dir).calibration.temperature
    torch_clf = load_model(model_dir, backend="torch")
    assert torch_clf.temperature == t
    with torch.inference_mode():
        logits = load_module(model_dir, read_card(model_dir))(torch_clf.preprocess(files)).numpy()
    expected = softmax(logits, t)
    got_torch = torch_clf.predict_proba(files)
    np.testing.assert_allclose(got_torch, expected, atol=1e-5)
    assert np.abs(got_torch - softmax(logits)).max() > 1e-3  # calibration did change them
    onnx_clf = load_model(model_dir, backend="onnx")
    np.testing.assert_allclose(onnx_clf.predict_proba(files), expected, atol=1e-4)
    assert float(read_metadata(model_dir / "model.onnx")["temperature"]) == t
    assert read_card(model_dir).exports["onnx"]["verification"]["passed"]
    # torch-bf16: its own (bfloat16) logits, divided by the same temperature.
    bf16_clf = load_model(model_dir, backend="torch-bf16")
    batch = torch_clf.preprocess(files)
    with torch.inference_mode():
        bf16_logits = bf16_clf.backend.module(batch.to(torch.bfloat16, memory_format=torch.channels_last)).float()
    np.testing.assert_allclose(bf16_clf.predict_proba(files), softmax(bf16_logits.numpy(), t), atol=1e-5)
    # The inversion gives back what the model said before calibration.
    probs, details = torch_clf.predict_details(files)
    np.testing.assert_allclose(torch_clf.uncalibrated(probs, details), fitted["uncal"], atol=1e-5)


def test_evaluation_reports_before_and_after(fitted):
    clf = load_model(fitted["dir"], backend="torch")
    ev = evaluate_classifier(clf, fitted["items"])
    labels = np.array([CLASSES.index(it.class_name) for it in fitted["items"]])
    m = ev.metrics
    assert m.log_loss_uncalibrated == pytest.approx(log_loss(labels, fitted["uncal"]), rel=1e-4)
    assert m.ece_uncalibrated == pytest.approx(expected_calibration_error(labels, fitted["uncal"]), abs=1e-5)
    assert m.reliability_uncalibrated and sum(b["count"] for b in m.reliability_uncalibrated) == len(labels)
    assert m.log_loss < m.log_loss_uncalibrated  # fitted on these very images: it must help here
    again = type(m).from_json(json.loads(json.dumps(m.to_json())))
    assert again == m
    old = m.to_json()
    for key in ("log_loss_uncalibrated", "ece_uncalibrated", "reliability_uncalibrated"):
        old.pop(key)
    legacy = type(m).from_json(old)  # a metrics.json written before calibration
    assert legacy.log_loss_uncalibrated is None and legacy.reliability_uncalibrated == []


def test_a_stale_onnx_file_is_refused(fitted, tmp_path):
    model_dir = fitted["dir"]
    card = read_card(model_dir).to_json()
    try:
        recalibrated = {**card, "calibration": {**card["calibration"], "temperature": card["calibration"]["temperature"] * 0.5}}
        atomic_write_json(model_dir / CARD_NAME, recalibrated)
        with pytest.raises(ModelFormatError, match=r"temperature.*image-classifier export"):
            load_model(model_dir, backend="onnx")
        # A file exported before calibration existed (no temperature in it) is taken as T = 1:
        # refused beside a calibrated card, accepted beside an uncalibrated one.
        plain = make_model_dir(tmp_path, "mobilenet_v2", input_size=48)
        export_model(plain, ExportOptions(measure=False))
        model = onnx.load(str(plain / "model.onnx"))
        kept = [(p.key, p.value) for p in model.metadata_props if not p.key.endswith(".temperature")]
        del model.metadata_props[:]
        for k, v in kept:
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(model, str(plain / "model.onnx"))
        plain_card = read_card(plain).to_json()
        plain_card["exports"]["onnx"].pop("sha256")
        atomic_write_json(plain / CARD_NAME, plain_card)
        assert load_model(plain, backend="onnx").temperature == 1.0
        atomic_write_json(plain / CARD_NAME, {**plain_card, "calibration": {"temperature": 1.5}})
        with pytest.raises(ModelFormatError, match=r"calibration temperature 1,.*image-classifier export"):
            load_model(plain, backend="onnx")
    finally:
        atomic_write_json(model_dir / CARD_NAME, card)


def test_face_head_applies_its_own_temperature():
    rng = np.random.default_rng(0)
    head = FaceHead(rng.normal(size=(3, 128)), rng.normal(size=3), np.zeros(128), np.ones(128),
                    rng.normal(size=(4, 128)), math.inf)
    d = rng.normal(size=(5, 128))
    path = FacePath(head, 48, temperature=2.5)
    np.testing.assert_allclose(path.probabilities(d), softmax(head.logits(d), 2.5), atol=1e-6)
    np.testing.assert_allclose(FacePath(head, 48).probabilities(d), head.probabilities(d), atol=0)


def _calibrated_study_json(tmp_path):
    """test_report's study, its models' probabilities calibrated by a temperature fitted on a
    separate validation draw (the "before" figures from the raw ones)."""
    from study_helpers import make_study_json

    from image_classifier.evaluate.metrics import compute_metrics, uncalibrated_metrics

    d = make_study_json(tmp_path)
    rng = np.random.default_rng(5)
    classes = d["data"]["classes"]
    for k, model in enumerate(d["models"]):
        n = model["test"]["n"]
        y = np.arange(n) % 3
        sharp = 6.0 if k == 0 else 0.7  # tiny_a over-confident, tiny_b under-confident

        def draw(size: int) -> tuple[np.ndarray, np.ndarray]:
            labels = rng.integers(0, 3, size)
            z = rng.normal(size=(size, 3))
            z[np.arange(size), labels] += 1.5
            return z * sharp, labels

        zv, yv = draw(400)
        fit = calibrate(zv, yv)
        z = rng.normal(size=(n, 3))
        z[np.arange(n), y] += 1.5
        z *= sharp
        model["test"] = {**compute_metrics(y, softmax(z, fit.temperature), classes),
                         **uncalibrated_metrics(y, softmax(z))}
        model["calibration"] = {"method": "temperature", "temperature": fit.temperature, "face_temperature": None,
                                "fitted_on": "validation", "images": 400, "nll_before": fit.nll_before,
                                "nll_after": fit.nll_after, "ece_before": fit.ece_before, "ece_after": fit.ece_after}
    return d


@pytest.mark.parametrize("lang", ["en", "es"])
def test_report_renders_the_calibration_section(tmp_path, lang):
    import csv

    from image_classifier.report import write_report
    from image_classifier.results import Study

    d = _calibrated_study_json(tmp_path)
    study = Study.from_json(d)
    run = tmp_path / "run"
    files = write_report(study, run, lang=lang)
    html, md = files.html.read_text(), files.markdown.read_text()
    heading = {"en": "Calibrated probabilities", "es": "Probabilidades calibradas"}[lang]
    assert 'id="calibration"' in html and f"## {heading}" in md
    for m in study.models:
        assert (run / f"plots/{m.name}-calibration.png").is_file()
        shown = f"{m.calibration.temperature:.2f}"
        assert (shown if lang == "en" else shown.replace(".", ",")) in md
        assert m.plots["calibration"] in md
    verdict = {"en": "The probabilities served", "es": "Las probabilidades servidas"}[lang]
    assert verdict in html and verdict in md
    rows = {r["model"]: r for r in csv.DictReader(files.csv.open())}
    for m in study.models:
        row = rows[m.name]
        assert float(row["ece"]) == pytest.approx(m.test.ece) and float(row["log_loss"]) == pytest.approx(m.test.log_loss)
        assert float(row["ece_uncalibrated"]) == pytest.approx(m.test.ece_uncalibrated)
        assert float(row["log_loss_uncalibrated"]) == pytest.approx(m.test.log_loss_uncalibrated)
        assert float(row["temperature"]) == pytest.approx(m.calibration.temperature)
    # metrics.json round-trips the new fields.
    again = Study.load(run)
    assert [m.calibration for m in again.models] == [m.calibration for m in study.models]
    assert [m.test.reliability_uncalibrated for m in again.models] == [m.test.reliability_uncalibrated
                                                                       for m in study.models]


def test_a_report_from_before_calibration_has_no_section(tmp_path):
    from study_helpers import make_study

    from image_classifier.report import write_report

    files = write_report(make_study(tmp_path), tmp_path / "run")
    assert 'id="calibration"' not in files.html.read_text()
    assert not list((tmp_path / "run" / "plots").glob("*-calibration.png"))
