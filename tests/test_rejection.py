""""None of these": the rejection rule, fitted on validation, applied everywhere a model answers.

A tiny CNN really trained on red vs blue pictures (through the package, as a user trains) must
answer "unknown" for green noise, keep exactly the share of its validation images the threshold
implies (at least ``keep``), and say so in ``predict``, ``predict --json``, the web API and the
Python API; ``--no-reject`` turns it off and a model without a rule (an older card) never rejects.
AUROC is checked on cases with a known answer; ``compare --unknown`` writes the new columns.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import image_classifier as ic
import train_helpers
from train_helpers import green_noise
from conftest import make_image_folder
from image_classifier.cli import main
from image_classifier.evaluate.rejection import auroc, leave_one_class_out, unknown_images
from image_classifier.inference.rejection import (
    FACE_DISTANCE, MAX_PROBABILITY, P_VALUE, PICTURE_DISTANCE, RejectionRule, check_keep, fit_rule, score_kinds,
)
from image_classifier.results import ModelResult, OpenSet, Study, model_row
from image_classifier.runs import CARD_NAME, SPLIT_NAME
from image_classifier.serve import create_app

TINY = train_helpers.TINY


# Registered while these tests run, not at import: other modules parametrize over list_archs().
pytestmark = pytest.mark.usefixtures("tiny_arch")


@pytest.fixture(scope="module")
def trained(tiny_arch, tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, model directory): red vs blue, 40 + 40 images, half of them for validation."""
    return train_helpers.train_red_blue(tmp_path_factory.mktemp("rejection"), 40)


@pytest.fixture(scope="module")
def unknown_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("unknown")
    (folder / "nested").mkdir()
    for i, im in enumerate(green_noise(6, seed=3)):
        im.save(folder / ("nested" if i % 2 else ".") / f"green_{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


# ---- the rule ------------------------------------------------------------------------------------

def test_the_threshold_keeps_the_fraction_it_implies_of_validation():
    rng = np.random.default_rng(0)
    for n in (1, 7, 20, 40, 133):
        values = rng.uniform(0.3, 1.0, n)
        rule = RejectionRule.fit([MAX_PROBABILITY] * n, values, 0.95)
        kept = np.mean([d.accepted for d in rule.decide([MAX_PROBABILITY] * n, values)])
        assert kept == (n - math.floor(0.05 * n + 1e-9)) / n  # the m lowest are rejected, no more
        assert kept >= 0.95
        assert rule.kept_fraction() == kept
        # A new image scoring like the lowest kept validation image is kept; like the highest
        # rejected one, rejected.
        m = math.floor(0.05 * n + 1e-9)
        assert rule.decide([MAX_PROBABILITY], [np.sort(values)[m]])[0].accepted
        if m:
            assert not rule.decide([MAX_PROBABILITY], [np.sort(values)[m - 1]])[0].accepted


def test_a_face_model_puts_two_kinds_on_one_p_value_scale():
    rng = np.random.default_rng(1)
    distances = rng.uniform(0.2, 0.6, 60)  # lower = more like a training face
    probs = rng.uniform(0.5, 1.0, 20)
    kinds = [FACE_DISTANCE] * 60 + [MAX_PROBABILITY] * 20
    rule = RejectionRule.fit(kinds, np.concatenate([distances, probs]), 0.9, p_value=True)
    assert rule.scale == P_VALUE and rule.threshold == pytest.approx(0.1)
    decisions = rule.decide(kinds, np.concatenate([distances, probs]))
    # Each kind keeps n - floor(0.1 n) of its own validation images: 54 of 60 and 18 of 20.
    assert sum(d.accepted for d in decisions[:60]) == 54
    assert sum(d.accepted for d in decisions[60:]) == 18
    # The farthest validation faces are the rejected ones; a stranger's distant face is rejected.
    rejected = sorted(distances[[not d.accepted for d in decisions[:60]]])
    assert rejected == sorted(distances)[-6:]
    far, near = rule.decide([FACE_DISTANCE, FACE_DISTANCE], [0.9, 0.1])
    assert not far.accepted and far.score == 0.0
    assert near.accepted and near.score == 1.0
    # The card keeps what is needed to decide the same way.
    again = RejectionRule.from_card(json.loads(json.dumps(rule.to_card())))
    assert [d.accepted for d in again.decide(kinds, np.concatenate([distances, probs]))] == [d.accepted for d in decisions]


def test_score_kinds_use_the_face_distance_where_a_face_was_found():
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    kinds, values = score_kinds(probs, [{"face_distance": 0.42}, {"face_distance": None}])
    assert kinds == [FACE_DISTANCE, MAX_PROBABILITY]
    assert values.tolist() == [0.42, 0.6]
    rule = fit_rule(probs, [{}, {}], 0.5)
    assert rule.scale == MAX_PROBABILITY


def test_a_photo_without_a_face_is_scored_by_its_picture_distance_and_each_kind_keeps_its_share():
    """Where no face was found the picture distance scores the photo (a face's distance wins where
    there is one); each kind is judged against its own validation references, and those of the
    picture kind, which a face model's validation photos with a face are counted under already, are
    left out of the images counted and kept."""
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3]])
    details = [{"face_distance": 0.42, "picture_distance": 0.3}, {"face_distance": None, "picture_distance": 0.31},
               {"face_distance": None}]
    kinds, values = score_kinds(probs, details)
    assert kinds == [FACE_DISTANCE, PICTURE_DISTANCE, MAX_PROBABILITY]
    assert values.tolist() == [0.42, 0.31, 0.7]
    faces = np.linspace(0.2, 0.6, 20)  # the 20th face (0.6) is the one keep 0.95 turns away
    pictures = np.linspace(0.1, 0.3, 40)  # the two furthest pictures are turned away
    rule = RejectionRule.fit([FACE_DISTANCE] * 20 + [PICTURE_DISTANCE] * 40, np.concatenate([faces, pictures]),
                             0.95, p_value=True)
    accepted = [d.accepted for d in rule.decide([PICTURE_DISTANCE] * 4, np.array([0.1, 0.29, 0.3, 0.5]))]
    assert accepted == [True, False, False, False]
    assert rule.decide([FACE_DISTANCE], np.array([0.5]))[0].accepted  # 0.5 is a near face, not a far picture
    card = rule.to_card()
    assert card["images"] == 20 and card["kept"] == pytest.approx(19 / 20)


def test_keep_must_be_a_fraction():
    for bad in (0, 1, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="--keep"):
            check_keep(bad)
    with pytest.raises(ValueError, match="--keep"):
        ic.train("nowhere", arch=TINY, keep=1.0)


def test_auroc_on_known_cases():
    assert auroc([0.9, 0.8, 0.7], [0.1, 0.2]) == 1.0  # perfect separation
    assert auroc([0.1, 0.2], [0.9, 0.8, 0.7]) == 0.0  # reversed
    assert auroc([0.5, 0.5], [0.5, 0.5, 0.5]) == 0.5  # all tied
    assert auroc([0.9, 0.3], [0.5]) == 0.5  # one above, one below
    assert auroc([0.6, 0.4], [0.4]) == 0.75  # one above, one tied
    assert auroc([], [0.1]) is None
    rng = np.random.default_rng(2)
    known, unknown = rng.normal(1, 1, 50), rng.normal(0, 1, 40)
    pairs = np.mean([(k > u) + 0.5 * (k == u) for k in known for u in unknown])
    assert auroc(known, unknown) == pytest.approx(pairs)


def test_leave_one_class_out_finds_a_class_between_the_others():
    # Three classes on a line: the middle one, left out, falls where the head fitted on the two
    # outer ones is least sure, so it is told apart perfectly; the outer ones, left out, are not.
    rng = np.random.default_rng(4)

    def subset(n: int) -> tuple[np.ndarray, np.ndarray]:
        centres = np.array([[-8.0, 0.0], [0.0, 0.0], [8.0, 0.0]])
        y = np.repeat(np.arange(3), n)
        return centres[y] + rng.normal(0, 1.0, (3 * n, 2)), y

    result = leave_one_class_out(subset(30), subset(20), subset(20), 3, 0.95)
    assert result is not None and result.method == "leave-one-class-out"
    assert result.unknown_images == 60 and result.known_images == 120
    assert result.known_accuracy_kept == 1.0
    assert leave_one_class_out(subset(5), subset(5), (np.zeros((2, 2)), np.array([0, 1])), 3, 0.95) is None


# ---- a real model --------------------------------------------------------------------------------

def test_a_trained_model_rejects_a_third_kind_and_keeps_validation(trained):
    data, model_dir = trained
    card = json.loads((model_dir / CARD_NAME).read_text())
    entry = card["rejection"]
    assert entry["score"] == MAX_PROBABILITY and entry["fitted_on"] == "validation" and entry["keep"] == 0.95
    assert entry["images"] == 40  # half of 80 images
    model = ic.load_model(model_dir, backend="torch")
    assert model.reject and model.rejection_rule is not None
    # Re-predicting the validation images gives exactly the share of them the card says is kept.
    from image_classifier.data.split import load_split

    val = [r.path for r in load_split(model_dir / SPLIT_NAME, data).subset("val")]
    probs, details = model.predict_details(val)
    kept = np.mean([not d["unknown"] for d in details])
    assert kept == entry["kept"] == (40 - 2) / 40
    # The rule scores the probabilities with the card's temperature taken out: calibration made
    # this model (perfect on validation) so sure that its served probabilities are all 1.0.
    assert model.temperature < 1
    assert kept == np.mean(model.uncalibrated(probs, details).max(1) >= entry["threshold"])

    green = green_noise(8)
    assert model.predict(green) == ["unknown"] * 8
    green_probs, details = model.predict_details(green)
    for d, row in zip(details, green_probs):
        assert d["unknown"] is True
        assert d["closest"]["label"] == model.classes[row.argmax()]  # the most probable class
        assert d["rejection"]["kind"] == MAX_PROBABILITY
        assert d["rejection"]["score"] < d["rejection"]["threshold"] == pytest.approx(entry["threshold"], abs=1e-6)
    # predict_proba is unchanged: the class probabilities, summing to 1.
    assert np.allclose(model.predict_proba(green).sum(1), 1.0, atol=1e-5)

    off = ic.load_model(model_dir, backend="torch", reject=False)
    assert "unknown" not in off.predict(green)
    assert all(d["rejection"] is None and d["unknown"] is False for d in off.predict_details(green)[1])


def test_a_model_without_a_rule_never_rejects(trained, tmp_path):
    _, model_dir = trained
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    card = json.loads((old / CARD_NAME).read_text())
    del card["rejection"]
    (old / CARD_NAME).write_text(json.dumps(card))
    model = ic.load_model(old, backend="torch")
    assert model.rejection_rule is None
    green = green_noise(4)
    assert "unknown" not in model.predict(green)
    details = model.predict_details(green)[1]
    assert all(d["unknown"] is False and d["rejection"] is None and d["closest"]["label"] for d in details)


def test_predict_prints_unknown_with_the_closest_class(trained, tmp_path, capsys):
    _, model_dir = trained
    green = tmp_path / "green.png"
    green_noise(1, seed=9)[0].save(green)
    red = next((trained[0] / "red").iterdir())
    closest = ic.load_model(model_dir, backend="torch", reject=False).predict([green])[0]  # its answer without the rule
    assert main(["predict", str(model_dir), str(green), str(red), "--backend", "torch"]) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(line for line in out if "green.png" in line)
    assert f"unknown (closest: {closest}, " in line and line.endswith("%)")
    assert "unknown" not in next(line for line in out if red.name in line)

    assert main(["predict", str(model_dir), str(green), "--backend", "torch", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["predictions"][0]
    assert result["unknown"] is True
    assert result["closest"]["label"] == closest
    assert result["rejection"]["score"] < result["rejection"]["threshold"]

    assert main(["predict", str(model_dir), str(green), "--backend", "torch", "--json", "--no-reject"]) == 0
    result = json.loads(capsys.readouterr().out)["predictions"][0]
    assert result["unknown"] is False and result["rejection"] is None and result["top"][0]["label"] == closest


def test_the_web_api_answers_unknown(trained):
    from serve_fixtures import check_response

    _, model_dir = trained
    buf = io.BytesIO()
    green_noise(1, seed=5)[0].save(buf, "PNG")
    closest = ic.load_model(model_dir, backend="torch", reject=False).predict([green_noise(1, seed=5)[0]])[0]
    for reject in (True, False):
        app = create_app(model_dir, reject=reject)
        client = app.test_client()
        openapi = client.get("/api/openapi.json").get_json()
        r = client.post("/api/predict", data={"file": (io.BytesIO(buf.getvalue()), "green.png")})
        body = r.get_json()
        assert r.status_code == 200, body
        check_response(openapi, "/api/predict", "post", 200, body)
        assert body["unknown"] is reject
        assert body["closest"]["label"] == closest
        if reject:
            assert body["label"] == "unknown" and body["rejection"]["kind"] == MAX_PROBABILITY
        else:
            assert body["label"] == body["closest"]["label"] and body["rejection"] is None


# ---- measuring it --------------------------------------------------------------------------------

def test_unknown_images_are_found_nested_or_flat(unknown_dir):
    found = unknown_images(unknown_dir)
    assert [u.rel_path for u in found] == ["green_0.png", "green_2.png", "green_4.png",
                                           "nested/green_1.png", "nested/green_3.png", "nested/green_5.png"]


def test_compare_unknown_writes_the_columns(tmp_path, unknown_dir):
    data = make_image_folder(tmp_path / "data", {"red": 20, "blue": 20})
    out = tmp_path / "run"
    code = main(["compare", str(data), "--models", TINY, "--out", str(out), "--no-export", "--no-faces",
                 "--no-cache", "--no-progress", "--speed-repeats", "1", "--set", "phases.0.epochs=3",
                 "--unknown", str(unknown_dir), "--keep", "0.9"])
    assert code == 0
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    row = rows[0]
    for column in ("unknown_auroc", "unknown_accept_rate", "known_accuracy_kept", "known_kept_rate"):
        assert 0.0 <= float(row[column]) <= 1.0, column
    assert row["unknown_method"] == "unknown folder"
    study = Study.load(out)
    o = study.models[0].open_set
    # Half of the folder (3 of 6) is measured with the test split; the other half is the choice's.
    assert o is not None and o.unknown_images == 3 and o.keep == 0.9 and o.known_images == study.models[0].test.n
    # The green noise is unlike both classes: the rule, fitted on validation, rejects it.
    assert o.unknown_accept_rate < 0.5 and o.auroc > 0.9
    card = json.loads((out / "models" / TINY / CARD_NAME).read_text())
    assert card["rejection"]["keep"] == 0.9
    assert "--keep 0.9" in study.command and "--unknown" in study.command
    report = (out / "report.md").read_text()
    assert "None of these" in report and "unknown folder" in report
    assert 'id="unknown"' in (out / "report.html").read_text()


def test_open_set_results_round_trip_and_old_files_load():
    o = OpenSet("unknown folder", MAX_PROBABILITY, 0.95, 0.81, 0.4, 0.96, 0.99, 65, 150, "unknown_people", 3.2)
    assert OpenSet.from_json(json.loads(json.dumps(o.to_json()))) == o
    base = {"name": "m", "model_dir": "models/m", "validation": {"accuracy": 0.9},
            "test": {"n": 2, "accuracy": 1.0, "accuracy_ci": [1.0, 1.0], "macro_f1": 1.0, "log_loss": 0.1,
                     "ece": 0.05, "per_class": [], "confusion_matrix": [[1, 0], [0, 1]], "classes": ["a", "b"]}}
    old = ModelResult.from_json(base)  # a metrics.json from before: no open_set
    assert old.open_set is None and model_row(old)["unknown_auroc"] is None
    new = ModelResult.from_json({**base, "open_set": o.to_json()})
    assert new.open_set == o and model_row(new)["unknown_accept_rate"] == 0.4
    assert ModelResult.from_json(new.to_json()).open_set == o


def test_evaluate_unknown_measures_the_rule(trained, unknown_dir, tmp_path, capsys):
    data, model_dir = trained
    out = tmp_path / "eval"
    assert main(["evaluate", str(model_dir), str(data), "--split", str(model_dir / SPLIT_NAME), "--subset", "test",
                 "--out", str(out), "--no-speed", "--backend", "torch", "--unknown", str(unknown_dir)]) == 0
    o = Study.load(out).models[0].open_set
    assert o is not None and o.method == "unknown folder" and o.unknown_images == 6
    assert o.unknown_accept_rate == 0.0 and o.auroc == 1.0  # green noise, unlike red and blue
    assert main(["evaluate", str(model_dir), str(data), "--split", str(model_dir / SPLIT_NAME), "--subset", "test",
                 "--out", str(tmp_path / "off"), "--no-speed", "--backend", "torch", "--unknown", str(unknown_dir),
                 "--no-reject"]) == 0
    assert Study.load(tmp_path / "off").models[0].open_set is None


def test_the_rule_is_refitted_when_keep_changes_not_when_the_temperature_does(trained):
    from image_classifier.card import ModelCard
    from image_classifier.trust.rejection import needs_rejection

    _, model_dir = trained
    card = json.loads((model_dir / CARD_NAME).read_text())
    assert not needs_rejection(ModelCard.from_json(card), 0.95)
    assert needs_rejection(ModelCard.from_json(card), 0.9)
    assert needs_rejection(ModelCard.from_json({k: v for k, v in card.items() if k != "rejection"}), 0.95)
    # The rule scores probabilities with the temperature taken out: another temperature leaves the
    # decisions as they were.
    assert not needs_rejection(ModelCard.from_json({**card, "calibration": {**card["calibration"], "temperature": 1.7}}),
                               0.95)
    green = green_noise(6, seed=4)
    decisions = [d["unknown"] for d in ic.load_model(model_dir, backend="torch").predict_details(green)[1]]
    other = tmp_copy = model_dir.parent / "recalibrated"
    shutil.copytree(model_dir, tmp_copy, dirs_exist_ok=True)
    (other / CARD_NAME).write_text(json.dumps({**card, "calibration": {**card["calibration"], "temperature": 1.7}}))
    again = [d["unknown"] for d in ic.load_model(other, backend="torch").predict_details(green)[1]]
    assert decisions == again == [True] * 6


def test_leave_one_class_out_by_distance_tells_every_separated_cluster_apart():
    # Three tight clusters far apart: by the distance to the known classes' training embeddings,
    # no left-out cluster is accepted - not even the outer ones, which the max-probability score of
    # a linear head accepts (a linear head is surest far from its boundary). (AUROC stops short of
    # 1: a known test image further out than every validation image ties with the unknowns at p = 0.)
    rng = np.random.default_rng(5)

    def subset(n: int) -> tuple[np.ndarray, np.ndarray]:
        centres = np.array([[-8.0, 0.0], [0.0, 0.0], [8.0, 0.0]])
        y = np.repeat(np.arange(3), n)
        return centres[y] + rng.normal(0, 0.5, (3 * n, 2)), y

    train, val, test = subset(30), subset(20), subset(20)
    by_distance = leave_one_class_out(train, val, test, 3, 0.95, score="face_distance")
    by_probability = leave_one_class_out(train, val, test, 3, 0.95)
    assert by_distance is not None and by_probability is not None
    assert by_distance.score == "p_value" and by_probability.score == "max_probability"
    assert by_distance.auroc > 0.98 and by_distance.unknown_accept_rate == 0.0
    assert by_probability.auroc < 0.9 and by_probability.unknown_accept_rate > 0.3
    assert by_distance.known_kept_rate >= 0.9 and by_distance.known_accuracy_kept == 1.0


def test_face_leave_one_class_out_reads_the_surveyed_descriptors():
    from types import SimpleNamespace

    from image_classifier.evaluate.rejection import face_leave_one_class_out

    rng = np.random.default_rng(6)
    centres = rng.normal(0, 1, (3, 128))
    centres *= 1.5 / np.linalg.norm(centres, axis=1, keepdims=True)  # people ~1 apart, like dlib's
    classes = ["a", "b", "c"]
    analyses, subsets = {}, {}
    for subset, n in (("train", 20), ("val", 15), ("test", 15)):
        items = []
        for k, name in enumerate(classes):
            for i in range(n):
                rel = f"{subset}/{name}/{i}.jpg"
                items.append(SimpleNamespace(rel_path=rel, class_name=name))
                # one image in five shows no face: left out, whatever it would score
                face = None if i % 5 == 0 else centres[k] + rng.normal(0, 0.02, 128)
                analyses[rel] = SimpleNamespace(descriptor=face)
        subsets[subset] = items
    result = face_leave_one_class_out(analyses, classes, subsets, 0.95)
    assert result is not None and result.method == "leave-one-class-out" and result.score == "p_value"
    assert result.unknown_images == 3 * 12 and result.known_images == 3 * 2 * 12  # faces only
    assert result.unknown_accept_rate == 0.0 and result.auroc > 0.95
    no_faces = {rel: SimpleNamespace(descriptor=None) for rel in analyses}
    assert face_leave_one_class_out(no_faces, classes, subsets, 0.95) is None


def test_a_distance_bound_accepts_within_it_whatever_the_p_value_and_survives_the_card():
    from image_classifier.inference.rejection import ADDED_FACE_DISTANCE
    references = {FACE_DISTANCE: np.linspace(0.2, 0.4, 20), ADDED_FACE_DISTANCE: np.linspace(0.25, 0.45, 40)}
    plain = RejectionRule(0.95, P_VALUE, references, 0.05)
    bounded = RejectionRule(0.95, P_VALUE, references, 0.05, {ADDED_FACE_DISTANCE: 0.52})
    kinds = [ADDED_FACE_DISTANCE, ADDED_FACE_DISTANCE, FACE_DISTANCE]
    values = np.array([0.50, 0.53, 0.50])
    # 0.50 is beyond every added reference: rejected by the p-value, accepted within the bound; the
    # bound is its kind's only (a trained person's face at 0.50 is still judged by its references).
    assert [d.accepted for d in plain.decide(kinds, values)] == [False, False, False]
    assert [d.accepted for d in bounded.decide(kinds, values)] == [True, False, False]
    # Stored in the card only when set (older cards unchanged), read back, kept by --keep.
    assert "accept_within" not in plain.to_card()
    loaded = RejectionRule.from_card(json.loads(json.dumps(bounded.to_card())))
    assert loaded.accept_within == {ADDED_FACE_DISTANCE: 0.52}
    assert [d.accepted for d in loaded.with_keep(0.5).decide(kinds, values)] == [True, False, False]
    assert loaded.with_keep(0.5).keep == 0.5
