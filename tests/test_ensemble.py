"""The ensemble: its weights on validation probabilities, a saved ensemble directory that
``predict``, ``load_model`` and ``serve`` open like any model, and ``compare``'s ensemble step.

The end-to-end part trains two tiny networks that each see one half of the picture (left or
right) on images whose class shows in one half only: each model is right on about half of the
images and unsure on the rest, so their average is the known best mix. Everything is real:
Pillow images, the real trainer, the CLI, files on disk, a fresh process, Flask's test client.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CHROMIUM, SHARED, rendered_ink
from ensemble_helpers import ARCHS, CHILD_PRELUDE, COLOURS, TESTS_DIR, compare_halves, make_halves
from image_classifier.cli import main
from image_classifier.errors import ModelFormatError
from image_classifier.evaluate.ensemble_selection import cross_fitted, mix, optimal_weights
from image_classifier.evaluate.metrics import log_loss
from image_classifier.i18n import translator
from image_classifier.inference.ensemble import EnsembleClassifier, ensemble_members, write_ensemble
from image_classifier.inference.loading import load_model
from image_classifier.inference.rejection import score_kinds
from image_classifier.report.markdown import render_markdown
from image_classifier.report.narrative import ensemble_sentences
from image_classifier.results import COLUMNS, EnsembleInfo, EnsembleMember, Study
from image_classifier.runs import WEIGHTS_NAME
from image_classifier.serve.app import create_app
from image_classifier.serve.store import ModelStore



# ---- the weights, on synthetic probabilities ---------------------------------------------------

def _complementary(n: int = 40, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Three classes; ``left`` is sure and right on the first half, unsure on the second; ``right``
    the opposite; ``bad`` is confidently wrong everywhere."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    sure = np.full((n, 3), 0.025)
    sure[np.arange(n), y] = 0.95
    unsure = np.full((n, 3), 1 / 3)
    half = np.arange(n) < n // 2
    left = np.where(half[:, None], sure, unsure)
    right = np.where(half[:, None], unsure, sure)
    bad = np.full((n, 3), 0.05)
    bad[np.arange(n), (y + 1) % 3] = 0.9
    return {"bad": bad, "left": left, "right": right}, y


def test_the_optimal_weights_take_the_complementary_pair_and_leave_a_bad_model_out():
    probs, y = _complementary()
    fitted = optimal_weights(probs, y)
    assert fitted.weights["bad"] == 0.0
    assert fitted.members == ["left", "right"]
    assert abs(sum(fitted.weights.values()) - 1.0) < 1e-12
    # Symmetric halves: the best mix is half and half.
    assert fitted.weights["left"] == pytest.approx(0.5, abs=1e-3) and fitted.weights["right"] == pytest.approx(0.5, abs=1e-3)
    assert fitted.log_loss == pytest.approx(log_loss(y, mix(probs, fitted.weights)))
    assert fitted.log_loss < fitted.best_single_log_loss
    assert fitted.accuracy == 1.0 and fitted.best_single_accuracy < 0.8


def test_the_weights_are_the_optimum_a_grid_finds_and_follow_the_better_model():
    probs, y = _complementary(60, seed=1)
    # Make "left" right on two thirds of the images: it should get more weight than "right".
    n = len(y)
    sure = np.full((n, 3), 0.025)
    sure[np.arange(n), y] = 0.95
    probs["left"] = np.where((np.arange(n) < 2 * n // 3)[:, None], sure, 1 / 3)
    pair = {"left": probs["left"], "right": probs["right"]}
    fitted = optimal_weights(pair, y)
    assert fitted.weights["left"] > fitted.weights["right"] > 0
    grid = min((log_loss(y, mix(pair, {"left": a, "right": 1 - a})), a) for a in np.linspace(0, 1, 1001))
    assert fitted.weights["left"] == pytest.approx(grid[1], abs=2e-3)
    assert fitted.log_loss <= grid[0] + 1e-9


def test_one_good_model_alone_is_not_an_ensemble():
    probs, y = _complementary()
    sure = np.full((len(y), 3), 0.01)
    sure[np.arange(len(y)), y] = 0.98
    fitted = optimal_weights({"sure": sure, "bad": probs["bad"]}, y)
    assert fitted.members == ["sure"]


def test_a_weight_of_one_third_is_found_where_one_half_would_be_worse():
    """From one model, a greedy forward step can only reach 1/2 for a second model; here 1/2 is
    worse than the best model alone while a smaller weight is better, and the optimum finds it."""
    n = 30
    y = np.zeros(n, dtype=np.int64)
    strong = np.tile([0.99, 0.005, 0.005], (n, 1))
    strong[:5] = [0.2, 0.79, 0.01]  # wrong and sure on five images
    weak = np.tile([0.5, 0.25, 0.25], (n, 1))
    weak[:5] = [0.9, 0.05, 0.05]
    pair = {"strong": strong, "weak": weak}
    half = log_loss(y, mix(pair, {"strong": 0.5, "weak": 0.5}))
    assert half > log_loss(y, strong)
    fitted = optimal_weights(pair, y)
    assert 0 < fitted.weights["weak"] < 0.5 and fitted.log_loss < log_loss(y, strong)


def test_cross_fitting_scores_each_image_with_weights_fitted_without_it():
    probs, y = _complementary(40)
    fitted, oof = cross_fitted(probs, y, seed=0)
    assert fitted.members == ["left", "right"]
    assert oof.shape == (len(y), 3) and np.allclose(oof.sum(axis=1), 1.0)
    assert np.mean(oof.argmax(1) == y) == 1.0
    # With one image per fold the weights of a fold never see it: a model right only on that image
    # gets no weight from the others, so the image is not rescued.
    y1 = np.zeros(5, dtype=np.int64)
    lucky = np.tile([0.0, 1.0, 0.0], (5, 1))
    lucky[2] = [1.0, 0.0, 0.0]
    wrong = np.tile([0.45, 0.55, 0.0], (5, 1))
    _, oof1 = cross_fitted({"wrong": wrong, "lucky": lucky}, y1, folds=5)
    assert oof1[2].argmax() != 0


def test_cross_fitting_one_validation_photo_a_person_deals_the_people_over_the_folds():
    # 12 people, one validation photo each (a folder of 8 photos a person): each class alone would
    # put its one photo in fold 0, leaving that fold no photo to fit the weights on.
    classes = 12
    y = np.arange(classes)
    right = np.eye(classes)[y] * 0.9 + 0.1 / classes
    wrong = np.roll(right, 1, axis=1)
    wrong[:3] = right[:3]  # right on 3 photos only
    fitted, oof = cross_fitted({"right": right, "wrong": wrong}, y, folds=5)
    assert fitted.weights["right"] > fitted.weights["wrong"]
    assert oof.shape == (classes, classes) and np.mean(oof.argmax(1) == y) == 1.0


@pytest.fixture(scope="module")
def compared(halves, tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    data = make_halves(root / "data")
    run = root / "runs" / "halves"
    argv = compare_halves(data, run, root / "cache")
    return {"root": root, "data": data, "run": run, "cache": root / "cache", "argv": argv}


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _test_images(run: Path, data: Path) -> list[Path]:
    with (run / "split.csv").open() as fh:
        return [data / r["rel_path"] for r in csv.DictReader(fh) if r["split"] == "test"]


def test_compare_keeps_the_ensemble_with_every_metric(compared):
    run = compared["run"]
    metrics = _metrics(run)
    info = metrics["ensemble"]
    assert info["outcome"] == "kept" and info["model_dir"] == "models/ensemble"
    weights = {m["name"]: m["weight"] for m in info["members"]}
    assert set(weights) == set(ARCHS) and all(w > 0 for w in weights.values())
    assert sum(weights.values()) == pytest.approx(1.0)
    # Its validation estimate is cross-fitted (each image mixed with weights fitted without it), and
    # beats each model alone beyond the noise: it is the served model.
    assert info["val_accuracy"] > max(m["val_accuracy"] for m in info["members"])
    selection = metrics["selection"]
    assert selection["decided_by"] == "accuracy" and selection["best"] == "ensemble"
    ens_row = next(c for c in selection["candidates"] if c["name"] == "ensemble")
    assert ens_row["kind"] == "ensemble" and ens_row["val_accuracy"] == info["val_accuracy"]
    assert all(c["difference_low"] > 0 for c in selection["candidates"] if c["name"] != "ensemble")
    rows = {m["name"]: m for m in metrics["models"]}
    ens = rows["ensemble"]
    assert ens["family"] == "ensemble" and ens["test"]["n"] == rows[ARCHS[0]]["test"]["n"]
    # Size and parameters are the members' sums; latency is measured on the ensemble itself.
    assert ens["speed"]["params"] == sum(rows[a]["speed"]["params"] for a in ARCHS)
    assert ens["speed"]["size_bytes"] >= sum(rows[a]["speed"]["size_bytes"] for a in ARCHS)
    assert ens["speed"]["latency_ms_p50"] > 0 and ens["speed"]["e2e_latency_ms_p50"] > 0
    assert info["member_latency_ms"] == pytest.approx(sum(rows[a]["speed"]["e2e_latency_ms_p50"] for a in ARCHS))
    # McNemar against each member, from the per-image predictions.
    pairs = {(p["model_a"], p["model_b"]) for p in metrics["pairwise"]}
    assert {(a, "ensemble") for a in ARCHS} <= pairs
    with (run / "predictions.csv").open() as fh:
        preds = [r for r in csv.DictReader(fh) if r["model"] == "ensemble"]
    assert len(preds) == ens["test"]["n"]
    correct = sum(r["correct"] == "True" for r in preds)
    assert correct / len(preds) == pytest.approx(ens["test"]["accuracy"])
    # Each model alone is right on about half; the mix of the two halves on (almost) all.
    assert ens["validation"]["accuracy"] > max(info["members"][i]["val_accuracy"] for i in range(2))
    assert metrics["selection"]["best"] == "ensemble"
    assert (run / "best").resolve() == (run / "models" / "ensemble").resolve()
    with (run / "comparison.csv").open() as fh:
        table = {r["model"]: r for r in csv.DictReader(fh)}
    assert list(table["ensemble"]) == list(COLUMNS) and table["ensemble"]["selected"] == "True"
    assert table["ensemble"]["test_accuracy"] and table["ensemble"]["latency_ms_p50"]
    study = Study.load(run)
    assert study.ensemble is not None and study.ensemble.kept and study.best.name == "ensemble"
    assert Study.from_json(study.to_json()).ensemble == study.ensemble
    report = (run / "report.md").read_text()
    assert "## Ensemble" in report and ARCHS[0] in report
    html = (run / "report.html").read_text()
    assert 'id="ensemble"' in html
    card = json.loads((run / "models" / "ensemble" / "model.json").read_text())
    assert card["architecture"] == "ensemble"
    assert all(not os.path.isabs(m["path"]) and len(m["sha256"]) == 64 for m in card["ensemble"]["members"])


def test_the_ensemble_decodes_once_per_input_size_and_averages_its_members(compared):
    run = compared["run"]
    ens = load_model(run / "models" / "ensemble", backend="torch")
    assert isinstance(ens, EnsembleClassifier)
    images = _test_images(run, compared["data"])[:5]
    decoded = ens.decode(images[0])
    assert len(decoded.by_key) == 2  # 32 px and 24 px
    singles = {a: load_model(run / "models" / a, backend="torch").predict_proba(images) for a in ARCHS}
    expected = sum(ens.weights[a] * singles[a] for a in ARCHS)
    np.testing.assert_allclose(ens.predict_proba(images), expected, atol=1e-5)
    assert ens.predict(images) == [ens.classes[i] for i in expected.argmax(axis=1)]


def test_poisoned_test_labels_leave_the_choice_unchanged(compared, tmp_path):
    """The test split never takes part in the choice: relabel every test image (move it to another
    class folder, and say so in the split) and the same candidates, evidence, members and weights
    come out."""
    data = tmp_path / "data"
    shutil.copytree(compared["data"], data)
    classes = list(COLOURS)
    with (compared["run"] / "split.csv").open() as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    moved = 0
    for r in rows:
        if r["split"] == "test":
            wrong = classes[(classes.index(r["class"]) + 1) % len(classes)]
            src = data / r["rel_path"]
            r["rel_path"] = f"{wrong}/{src.name}"
            r["class"] = wrong
            src.rename(data / r["rel_path"])
            moved += 1
    assert moved > 0
    split = tmp_path / "poisoned.csv"
    with split.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    run = tmp_path / "run"
    compare_halves(data, run, compared["cache"], "--split", str(split))
    before, after = _metrics(compared["run"]), _metrics(run)
    def chosen(metrics: dict) -> list[tuple]:  # latencies are measured anew, and differ
        return [(m["name"], m["weight"], m["val_log_loss"], m["val_accuracy"]) for m in metrics["ensemble"]["members"]]

    def evidence(metrics: dict) -> list[tuple]:
        keys = ("name", "val_accuracy", "val_log_loss", "cv_accuracy", "strangers_accepted", "eligible", "tied",
                "difference", "difference_low", "difference_high")
        return [tuple(c[k] for k in keys) for c in metrics["selection"]["candidates"]]

    assert chosen(after) == chosen(before)
    assert after["ensemble"]["val_log_loss"] == before["ensemble"]["val_log_loss"]
    # The whole choice: every candidate's evidence, and what was served.
    assert evidence(after) == evidence(before) and len(evidence(after)) == 3
    assert after["selection"]["best"] == before["selection"]["best"] == "ensemble"
    assert after["selection"]["reason"] == before["selection"]["reason"]
    # The poison did reach the test scoring.
    test_acc = {m["name"]: m["test"]["accuracy"] for m in after["models"]}
    assert test_acc["ensemble"] < {m["name"]: m["test"]["accuracy"] for m in before["models"]}["ensemble"]


def test_a_moved_run_reloads_in_a_fresh_process_and_predicts_the_same(compared, tmp_path):
    run = tmp_path / "copied"
    shutil.copytree(compared["run"], run, symlinks=True)
    images = _test_images(compared["run"], compared["data"])[:6]
    here = load_model(compared["run"] / "models" / "ensemble", backend="torch").predict_proba(images)
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(str(run), str(moved))
    code = CHILD_PRELUDE + (
        "import json, sys\n"
        "from image_classifier import load_model\n"
        "clf = load_model(sys.argv[1])\n"  # auto: each member on its recorded backend; via the best link
        "print(json.dumps({'probs': clf.predict_proba(sys.argv[2:]).tolist(), 'kind': type(clf).__name__}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR.parent / "src"), str(TESTS_DIR)])}
    out = subprocess.run([sys.executable, "-c", code, str(moved / "best"), *map(str, images)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["kind"] == "EnsembleClassifier"
    np.testing.assert_allclose(np.array(answer["probs"]), here, atol=1e-4)


def test_a_weight_zero_member_is_not_loaded_and_a_changed_member_is_refused(compared, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(compared["run"], run, symlinks=True)
    models = {a: run / "models" / a for a in ARCHS}
    solo = write_ensemble(tmp_path / "solo", models, {ARCHS[0]: 1.0})
    assert [(m.name, m.weight) for m in ensemble_members(solo)] == [(ARCHS[0], 1.0), (ARCHS[1], 0.0)]
    (models[ARCHS[1]] / WEIGHTS_NAME).unlink()  # the weight-0 member could not be loaded now
    ens = load_model(solo, backend="torch")
    assert [n for n, _, _ in ens.members] == [ARCHS[0]]
    images = _test_images(compared["run"], compared["data"])[:3]
    alone = load_model(models[ARCHS[0]], backend="torch").predict_proba(images)
    np.testing.assert_allclose(ens.predict_proba(images), alone, atol=1e-6)
    # A member that changed since the weights were chosen (recalibrated here) is a clear error.
    card_path = models[ARCHS[0]] / "model.json"
    card = json.loads(card_path.read_text())
    card["calibration"] = {"method": "temperature", "temperature": 2.0}
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="changed since the ensemble was chosen"):
        load_model(solo, backend="torch")


def test_predict_and_serve_answer_with_the_ensemble(compared, capsys):
    run = compared["run"]
    images = _test_images(run, compared["data"])[:2]
    capsys.readouterr()
    assert main(["predict", str(run / "models" / "ensemble"), *map(str, images), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["architecture"] == "ensemble"
    direct = load_model(run / "models" / "ensemble", backend="torch").predict_proba(images)
    for answer, row in zip(printed["predictions"], direct):
        got = [answer["probabilities"][c] for c in printed["classes"]]
        np.testing.assert_allclose(got, row, atol=1e-4)  # predict's default backend is auto (ONNX here)
        assert [m["name"] for m in answer["members"]] == list(ARCHS)
    app = create_app([run], backend="auto")
    client = app.test_client()
    models = client.get("/api/models").get_json()
    names = [m["name"] for m in (models["models"] if isinstance(models, dict) else models)]
    assert "ensemble" in names
    body = images[0].read_bytes()
    r = client.post("/api/predict", data={"file": (io.BytesIO(body), "x.png")})  # the run's best: the ensemble
    assert r.status_code == 200, r.get_json()
    answer = r.get_json()
    assert answer["model"] == "ensemble"
    got = np.array([answer["probabilities"][c] for c in load_model(run / "models" / "ensemble").classes])
    np.testing.assert_allclose(got, direct[0], atol=1e-4)
    assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)


def test_no_ensemble_and_a_tight_budget_keep_none(compared, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(compared["run"], run, symlinks=True)
    compare_halves(compared["data"], run, compared["cache"], "--no-ensemble")
    metrics = _metrics(run)
    assert "ensemble" not in metrics and all(m["name"] != "ensemble" for m in metrics["models"])
    assert not (run / "models" / "ensemble").exists()  # the previous run's is gone: serve won't offer it
    assert metrics["selection"]["best"] in ARCHS and "--no-ensemble" in metrics["command"]
    # A budget below any single model's latency: tried, nothing fits, said so.
    compare_halves(compared["data"], run, compared["cache"], "--ensemble-max-latency", "0.0001")
    metrics = _metrics(run)
    assert metrics["ensemble"]["outcome"] == "over_budget"
    assert all(m["name"] != "ensemble" for m in metrics["models"])
    assert "## Ensemble" in (run / "report.md").read_text()


def test_the_report_says_whether_the_mix_is_served_in_both_languages(compared):
    study = Study.load(compared["run"])
    es = render_markdown(study, translator("es"))
    assert "## Ensemble (combinación de modelos)" in es and "Es el modelo servido" in es
    assert "## Cómo se eligió el modelo servido" in es
    # A run saved before ensembles has none, and still loads.
    old = study.to_json()
    del old["ensemble"]
    assert Study.from_json(old).ensemble is None and ensemble_sentences(Study.from_json(old)) == []
    # A mix that was a candidate but not the choice says which model is served instead.
    other = EnsembleInfo("not_chosen", [EnsembleMember("a", 0.5, 0.7, 0.8, 10.0),
                                        EnsembleMember("b", 0.5, 0.9, 0.6, 5.0)],
                         val_images=30, val_log_loss=0.71, val_accuracy=0.8, best_single="a",
                         best_single_val_log_loss=0.7, best_single_val_accuracy=0.8, name="ensemble")
    study.ensemble = other
    text = " ".join(ensemble_sentences(study))
    assert "It is not the served model: ensemble is" in text  # the run's selection is the mix
    assert "0.7100" in text and "0.7000" in text and "a 0.50, b 0.50" in text
    assert "No es el modelo servido" in " ".join(ensemble_sentences(study, translator("es")))
    assert Study.from_json(study.to_json()).ensemble == other


def test_concurrent_requests_batched_by_the_server_get_the_ensembles_answers(compared):
    """The server's inference threads batch waiting requests: packed rows of several images (each
    with its members' flags and inputs) must come apart into each image's own answer."""
    run = compared["run"]
    images = _test_images(run, compared["data"])[:8]
    ens = load_model(run / "models" / "ensemble", backend="torch")
    direct = ens.predict_proba(images)
    # What a worker does with a batch of requests: one forward pass over the concatenated rows.
    prepared = [ens.prepare([ens.decode(p.read_bytes())]) for p in images]
    forward = ens.predict_tensor(torch.cat([torch.from_numpy(p.batch) for p in prepared]))
    batched = np.concatenate([ens.finish(p, forward[i:i + 1]) for i, p in enumerate(prepared)])
    np.testing.assert_allclose(batched, direct, atol=1e-5)
    # And through the server's own threads, concurrently.
    store = ModelStore.from_paths([run / "models" / "ensemble"], backend="torch", max_parallel=1, max_batch=8).load()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: store.predict_bytes(p.read_bytes()), images))
    finally:
        store.close()
    for answer, row in zip(answers, direct):
        np.testing.assert_allclose([answer.probabilities[c] for c in ens.classes], row, atol=1e-5)
        assert [m["name"] for m in answer.details["members"]] == list(ARCHS)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM, reason="no chromium")
def test_the_ensemble_section_renders_in_chromium(compared, tmp_path):
    """The report's ensemble section alone (with the report's own style) shows text and its table."""
    page = (compared["run"] / "report.html").read_text(encoding="utf-8")
    head = page.split("<main>", 1)[0]
    section = page.split('<h2 id="ensemble">', 1)[1].split("<h2 ", 1)[0]
    assert "<table" in section
    alone = tmp_path / "section.html"
    alone.write_text(f'{head}<main><h2 id="ensemble">{section}</main></body></html>', encoding="utf-8")
    assert rendered_ink(alone, tmp_path / "shot.png", "1000,500") > 0.01


def test_export_says_an_ensemble_has_no_onnx_of_its_own(compared, capsys):
    assert main(["export", str(compared["run"] / "models" / "ensemble")]) == 2
    err = capsys.readouterr().err
    assert "is an ensemble" in err and "../tiny_half_left" in err
    assert not (compared["run"] / "models" / "ensemble" / "model.onnx").exists()


@pytest.mark.slow
def test_a_face_model_and_a_cnn_mix_per_image_whether_a_face_decided(halves, athletes_dir, tmp_path):
    """compare with face_embedding and a CNN on a small real sample of the athletes: the face
    model answers images with a face from its descriptor (no forward pass) and the others with its
    fallback network; in the ensemble both kinds of image still get the weighted average, alone
    and through the server's batched path."""
    mobilenet = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
    if not mobilenet.is_file():
        pytest.skip(f"needs {mobilenet}")
    data = tmp_path / "people"
    for cls in ("Kobe Bryant", "Maria Sharapova", "ronaldo"):
        (data / cls).mkdir(parents=True)
        for src in sorted((athletes_dir / cls).iterdir())[:10]:
            (data / cls / src.name).write_bytes(src.read_bytes())
    run = tmp_path / "run"
    argv = ["compare", str(data), "--models", f"face_embedding,{ARCHS[0]}", "--out", str(run), "--seed", "0",
            "--val", "0.3", "--test", "0.3", "--speed-repeats", "2", "--cache-dir", str(tmp_path / "cache"),
            "--no-progress", "--no-export", "--weights", f"mobilenet_v2={mobilenet}",
            "--set", "face_embedding:phases.frozen.epochs=2", "--set", "face_embedding:feature_views=1"]
    assert main(argv) == 0
    info = _metrics(run)["ensemble"]
    assert info["val_images"] > 0  # the ensemble step ran on validation (its outcome is another test's)
    # Whatever compare decided, a half-and-half mix of the two must average them image by image.
    models = {"face_embedding": run / "models" / "face_embedding", ARCHS[0]: run / "models" / ARCHS[0]}
    mixed = write_ensemble(tmp_path / "mixed", models, {"face_embedding": 0.5, ARCHS[0]: 0.5})
    ens = load_model(mixed, backend="torch")
    images = _test_images(run, data)
    face = load_model(models["face_embedding"], backend="torch")
    probs, details = face.predict_details(images)
    decided = [d.get("face") is not None for d in details]
    assert any(decided), "no test image with a face: the face path is not exercised"
    expected = 0.5 * probs + 0.5 * load_model(models[ARCHS[0]], backend="torch").predict_proba(images)
    np.testing.assert_allclose(ens.predict_proba(images), expected, atol=1e-5)
    prepared = [ens.prepare([ens.decode(p.read_bytes())]) for p in images]
    rows = [p for p in prepared if p.rows]
    forward = ens.predict_tensor(torch.cat([torch.from_numpy(p.batch) for p in rows]))
    batched, r = [], 0
    for p in prepared:
        batched.append(ens.finish(p, forward[r:r + 1] if p.rows else None))
        r += bool(p.rows)
    np.testing.assert_allclose(np.concatenate(batched), expected, atol=1e-5)
    # "None of these": each image's member_p_value is the smaller of the members' own p-values, the
    # face model's from the face's distance to its bank where a face was found.
    cnn = load_model(models[ARCHS[0]], backend="torch")
    cnn_probs, cnn_details = cnn.predict_details(images)
    face_kinds, face_values = score_kinds(face.uncalibrated(probs, details), details)
    assert "face_distance" in face_kinds
    own = np.minimum(face.rejection_rule.p_values(face_kinds, face_values),
                     cnn.rejection_rule.p_values(*score_kinds(cnn.uncalibrated(cnn_probs, cnn_details), cnn_details)))
    np.testing.assert_allclose([d["member_p_value"] for d in ens.predict_details(images)[1]], own, atol=1e-6)


def test_the_kept_ensemble_has_its_own_rejection_rule_and_no_leave_one_class_out_row(compared):
    # "None of these" for the ensemble (tests/test_ensemble_rejection.py has the rest): compare fits
    # its rule on the validation split for the default keep; leave-one-class-out (no --unknown)
    # needs one network's features, so the ensemble's row is not measured (None) while its members' are.
    run = compared["run"]
    card = json.loads((run / "models" / "ensemble" / "model.json").read_text())
    assert card["rejection"]["keep"] == 0.95 and card["rejection"]["fitted_on"] == "validation"
    assert list(card["rejection"]["kinds"]) == ["member_p_value"]
    metrics = _metrics(run)
    rows = {m["name"]: m for m in metrics["models"]}
    assert rows["ensemble"].get("open_set") is None
    assert all(rows[a]["open_set"]["method"] == "leave-one-class-out" for a in ARCHS)
    assert metrics["timings"]["ensemble_rejection_seconds"] >= 0
    report = (run / "report.md").read_text()
    assert "the ensemble is not measured here: give compare --unknown DIR" in report
