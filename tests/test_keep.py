"""A threshold a person can set: ``--keep`` on predict, sort and serve, ``?keep=`` on the API and
``model.with_keep`` in Python move the "none of these" threshold exactly where the validation
scores stored in the card put it, and say what it trades as measured on validation."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import UNKNOWN_PEOPLE
from serve_fixtures import check_response

from image_classifier import load_model
from image_classifier.faces import FaceCache
from image_classifier.inference.rejection import RejectionRule

ROOT = Path(__file__).resolve().parents[1]
KEEPS = (0.95, 0.9, 0.8, 0.6, 0.4)


def _accepted(refs: list[float], value: float, keep: float, *, distance: bool = True) -> bool:
    """The rule as the card describes it, computed here from the card's numbers alone: a photo's
    conformal p-value is the share of validation scores of its kind that look no more like a known
    person than its own (distances at least as large; probabilities at most as large), and the
    rule rejects the floor((1 - keep) n) strangest of the n validation photos of that kind."""
    n = len(refs)
    as_strange = sum((r >= value) if distance else (r <= value) for r in refs)
    return as_strange > math.floor((1 - keep) * n + 1e-9)


@pytest.fixture(scope="module")
def faces_folder(face_model, tmp_path_factory) -> Path:
    """Photos with faces: the model's test photos and a dozen strangers."""
    root = tmp_path_factory.mktemp("keep")
    with open(face_model["split"], newline="") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == "test":
                (root / r["rel_path"].replace("/", "_")).symlink_to(face_model["data"] / r["rel_path"])
    if UNKNOWN_PEOPLE.is_dir():
        for f in sorted(UNKNOWN_PEOPLE.iterdir())[:12]:
            (root / f"stranger_{f.name}").symlink_to(f)
    return root


@pytest.mark.slow
def test_keep_moves_each_decision_exactly_as_the_validation_scores_imply(face_model, faces_folder):
    card = json.loads((face_model["model"] / "model.json").read_text())
    refs = card["rejection"]["kinds"]["face_distance"]
    model = load_model(face_model["model"], backend="torch", face_cache=FaceCache(face_model["cache"]))
    unknown_counts = []
    for keep in KEEPS:
        probs, details = model.with_keep(keep).predict_details(faces_folder)
        with_face = [d for d in details if d["face_distance"] is not None]
        assert len(with_face) >= 10
        for d in with_face:
            assert d["unknown"] == (not _accepted(refs, d["face_distance"], keep)), (keep, d["face_distance"])
            for face in d["faces"]:  # every face by the same rule
                assert face["unknown"] == (not _accepted(refs, face["distance"], keep))
        unknown_counts.append(sum(d["unknown"] for d in details))
    # A lower keep only ever turns more photos away, and these keeps do move some.
    assert unknown_counts == sorted(unknown_counts) and unknown_counts[-1] > unknown_counts[0]


@pytest.mark.slow
def test_predict_and_sort_keep_print_what_it_trades_on_the_known_photos(face_model, faces_folder, tmp_path):
    card = json.loads((face_model["model"] / "model.json").read_text())
    kinds = card["rejection"]["kinds"]
    strangers = card["faces"]["strangers"]["distances"]
    keep = 0.6
    # What the card's numbers say, computed here: the known photos kept (the training and
    # validation photos' face distances by the rule above; photos without a face by the fallback's
    # probability against its own), and the known faces seen as strangers (every training and
    # validation photo against the other people's faces) that the threshold lets through.
    probabilities = kinds.get("max_probability", [])
    kept = np.mean([_accepted(kinds["face_distance"], d, keep) for d in kinds["face_distance"]]
                   + [_accepted(probabilities, p, keep, distance=False) for p in probabilities])
    accepted = np.mean([_accepted(kinds["face_distance"], d, keep) for d in strangers])
    line = (f"none of these: keep 0.6: keeps {100 * kept:.1f} % of the known training and validation photos, accepts "
            f"{100 * accepted:.1f} % of {len(strangers)} known faces seen as strangers")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "IMAGE_CLASSIFIER_CACHE_DIR": str(face_model["cache"])}
    run = subprocess.run([sys.executable, "-m", "image_classifier", "predict", str(face_model["model"]),
                          str(faces_folder), "--keep", "0.6", "--json", "--backend", "torch"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert line in run.stderr
    python = load_model(face_model["model"], backend="torch", face_cache=FaceCache(face_model["cache"])).with_keep(keep).predict(faces_folder)
    cli = ["unknown" if p["unknown"] else p["top"][0]["label"] for p in json.loads(run.stdout)["predictions"]]
    assert cli == python
    sort = subprocess.run([sys.executable, "-m", "image_classifier", "sort", str(face_model["model"]),
                           str(faces_folder), "--out", str(tmp_path / "out"), "--keep", "0.6", "--backend", "torch",
                           "--no-progress"], capture_output=True, text=True, timeout=600, env=env)
    assert sort.returncode == 0 and line in sort.stderr
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        assert [r["label"] for r in csv.DictReader(fh)] == python


@pytest.mark.slow
def test_the_api_keep_parameter_and_its_errors(face_model, faces_folder):
    from image_classifier.serve import ModelStore, create_app

    store = ModelStore.from_paths([face_model["model"]]).load()
    try:
        client = create_app(store).test_client()
        doc = client.get("/api/openapi.json").get_json()
        photos = sorted(faces_folder.iterdir())[:6]
        model = load_model(face_model["model"], backend="torch", face_cache=FaceCache(face_model["cache"]))
        for keep in (0.95, 0.5):
            expected = model.with_keep(keep).predict(photos)
            got = []
            for photo in photos:
                r = client.post(f"/api/predict?keep={keep}", data=photo.read_bytes(),
                                content_type="application/octet-stream")
                check_response(doc, "/api/predict", "post", 200, r.get_json())
                got.append(r.get_json()["label"])
                assert r.get_json()["threshold"]["keep"] == keep
            assert got == expected
        for bad in ("1.5", "0", "abc", "nan"):
            r = client.post(f"/api/predict?keep={bad}", data=photos[0].read_bytes())
            assert r.status_code == 422 and r.get_json()["kind"] == "bad_parameter"
            check_response(doc, "/api/predict", "post", 422, r.get_json())
    finally:
        store.close()


def test_keep_on_a_model_without_a_rule_is_a_clear_error(colour_model):
    from image_classifier.serve import create_app

    model_dir = colour_model  # saved without a rejection rule
    assert load_model(model_dir, backend="torch").rejection_rule is None
    with pytest.raises(ValueError, match="no \"none of these\" rule .* retrain"):
        load_model(model_dir, backend="torch").with_keep(0.9)
    client = create_app([model_dir]).test_client()
    from serve_fixtures import COLOURS, colour_image, encode

    r = client.post("/api/predict?keep=0.9", data=encode(colour_image(COLOURS["green"])))
    assert r.status_code == 422 and "no \"none of these\" rule" in r.get_json()["error"]


def test_a_probability_rule_moved_to_another_keep_is_the_one_fitted_there():
    """A CNN's rule thresholds the raw probability: moving it recomputes the threshold from the
    stored validation scores as fitting at that keep would have, and keeps at least that share."""
    rng = np.random.default_rng(0)
    scores = np.sort(rng.uniform(0.3, 1.0, 40))
    rule = RejectionRule.fit(["max_probability"] * 40, scores, 0.95)
    for keep in (0.9, 0.75, 0.5):
        moved = rule.with_keep(keep)
        fitted = RejectionRule.fit(["max_probability"] * 40, scores, keep)
        assert (moved.keep, moved.scale, moved.threshold) == (fitted.keep, fitted.scale, fitted.threshold)
        rejected = int(math.floor((1 - keep) * 40 + 1e-9))
        assert moved.threshold == pytest.approx((scores[rejected - 1] + scores[rejected]) / 2)
        assert moved.kept_fraction() == (40 - rejected) / 40 >= keep
