""""None of these" for an ensemble: its own rule on the smallest of its members' p-values.

Two tiny CNNs really trained on red vs blue (each with the rule ``train`` fits on validation) make
an ensemble; its rule, fitted on the same validation images, keeps at least ``keep`` of them by
construction, scores each image by the strangest member's p-value, rejects green noise that the
members reject (Python API and web API), is off with ``reject=False``, survives the card, and an
ensemble card without one (an older run) never rejects. ``compare --unknown`` measures the
ensemble's row like every model's.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

import image_classifier as ic
import train_helpers
from conftest import make_image_folder
from ensemble_helpers import ARCHS, compare_halves, make_halves
from serve_fixtures import check_response
from train_helpers import green_noise
from image_classifier.cli import main
from image_classifier.data.split import load_split
from image_classifier.evaluate.evaluation import DecodeCache, LabelledImage
from image_classifier.evaluate.rejection import UNKNOWN_FOLDER
from image_classifier.inference.ensemble import write_ensemble
from image_classifier.inference.rejection import MEMBER_P_VALUE, P_VALUE, RejectionRule, score_kinds
from image_classifier.results import Study
from image_classifier.runs import CARD_NAME, SPLIT_NAME
from image_classifier.serve import create_app
from image_classifier.trust.rejection import fit_ensemble_rejection

TINY = train_helpers.TINY
KEEP = 0.9


pytestmark = pytest.mark.usefixtures("tiny_arch")


@pytest.fixture(scope="module")
def pair(tiny_arch, tmp_path_factory) -> dict:
    """Two members trained on the same split (same seed; one trains longer) and their ensemble,
    saved without a rule (as an older run's) and, apart, with one fitted for ``KEEP``."""
    root = tmp_path_factory.mktemp("ensrej")
    data = make_image_folder(root / "data", {"red": 40, "blue": 40})
    for name, epochs in (("a", 3), ("b", 2)):
        ic.train(data, arch=TINY, out=root / name, epochs=epochs, cache=False, progress=False, val=0.5, test=0.1)
    members = {"a": root / "a", "b": root / "b"}
    old = write_ensemble(root / "old", members, {"a": 0.6, "b": 0.4})
    ens_dir = write_ensemble(root / "ens", members, {"a": 0.6, "b": 0.4})
    val = [LabelledImage.from_record(r) for r in load_split(root / "a" / SPLIT_NAME, data).subset("val")]
    ensemble = ic.load_model(ens_dir, backend="torch")
    entry = fit_ensemble_rejection(ensemble, val, KEEP, DecodeCache())
    return {"data": data, "members": members, "old": old, "ens": ens_dir, "val": val, "entry": entry,
            "fitted": ensemble}


def test_the_rule_keeps_keep_of_validation_and_scores_the_strangest_member(pair):
    entry = pair["entry"]
    assert entry["score"] == P_VALUE and entry["keep"] == KEEP and entry["fitted_on"] == "validation"
    assert entry["images"] == len(pair["val"]) == 40 and list(entry["kinds"]) == [MEMBER_P_VALUE]
    assert entry["kept"] >= KEEP and entry["seconds"] >= 0
    # The card holds it, and a fresh load applies it: the validation images are kept as the card says.
    card = json.loads((pair["ens"] / CARD_NAME).read_text())
    assert card["rejection"] == entry
    ensemble = ic.load_model(pair["ens"], backend="torch")
    assert ensemble.rejects and ensemble.rejection_rule.to_card() == {k: v for k, v in entry.items() if k != "seconds"}
    paths = [it.path for it in pair["val"]]
    _, details = ensemble.predict_details(paths)
    kept = np.mean([not d["unknown"] for d in details])
    assert kept >= KEEP and kept == pytest.approx(entry["kept"])
    # member_p_value is the smallest of the members' own p-values, as each member alone scores it.
    own = []
    for member in pair["members"].values():
        clf = ic.load_model(member, backend="torch")
        probs, det = clf.predict_details(paths)
        own.append(clf.rejection_rule.p_values(*score_kinds(clf.uncalibrated(probs, det), det)))
    expected = np.minimum(*own)
    got = np.array([d[MEMBER_P_VALUE] for d in details])
    assert np.allclose(got, expected)
    assert all(d["rejection"]["kind"] == MEMBER_P_VALUE for d in details)
    assert np.allclose([[m["p_value"] for m in d["members"]] for d in details], np.stack(own, 1), atol=1e-6)


def test_the_ensemble_rejects_what_its_members_reject(pair):
    green = green_noise(8)
    for member in pair["members"].values():
        assert ic.load_model(member, backend="torch").predict(green) == ["unknown"] * 8
    ensemble = ic.load_model(pair["ens"], backend="torch")
    assert ensemble.predict(green) == ["unknown"] * 8
    probs, details = ensemble.predict_details(green)
    for d, row in zip(details, probs):
        assert d["unknown"] is True and d["closest"]["label"] == ensemble.classes[row.argmax()]
        assert d["rejection"]["kind"] == MEMBER_P_VALUE and d["rejection"]["score"] < d["rejection"]["threshold"]
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)  # the class probabilities are unchanged
    # Red and blue pictures of the known classes are still answered.
    known = ensemble.predict([it.path for it in pair["val"]])
    assert sum(label != "unknown" for label in known) >= KEEP * len(known)

    off = ic.load_model(pair["ens"], backend="torch", reject=False)
    assert not off.rejects and "unknown" not in off.predict(green)
    assert all(d["unknown"] is False and d["rejection"] is None for d in off.predict_details(green)[1])


def test_an_ensemble_card_without_a_rule_never_rejects(pair):
    old = ic.load_model(pair["old"], backend="torch")
    assert old.rejection_rule is None
    green = green_noise(4)
    assert "unknown" not in old.predict(green)
    details = old.predict_details(green)[1]
    # Its members' p-values are still computed (what a rule would threshold), nothing is rejected.
    assert all(d["unknown"] is False and d["rejection"] is None and d[MEMBER_P_VALUE] is not None for d in details)


def test_the_rule_round_trips_through_the_card(pair):
    rule = RejectionRule.from_card(pair["entry"])
    assert rule is not None and rule.scale == P_VALUE and set(rule.references) == {MEMBER_P_VALUE}
    again = RejectionRule.from_card(json.loads(json.dumps(rule.to_card())))
    assert again.to_card() == rule.to_card()
    assert np.array_equal(again.references[MEMBER_P_VALUE], rule.references[MEMBER_P_VALUE])


def test_the_web_api_answers_unknown_with_the_ensemble(pair):
    buf = io.BytesIO()
    green_noise(1, seed=5)[0].save(buf, "PNG")
    closest = ic.load_model(pair["ens"], backend="torch", reject=False).predict([green_noise(1, seed=5)[0]])[0]
    for reject in (True, False):
        client = create_app(pair["ens"], reject=reject).test_client()
        openapi = client.get("/api/openapi.json").get_json()
        r = client.post("/api/predict", data={"file": (io.BytesIO(buf.getvalue()), "green.png")})
        body = r.get_json()
        assert r.status_code == 200, body
        check_response(openapi, "/api/predict", "post", 200, body)
        assert body["unknown"] is reject and body["closest"]["label"] == closest
        if reject:
            assert body["label"] == "unknown" and body["rejection"]["kind"] == MEMBER_P_VALUE
        else:
            assert body["label"] == body["closest"]["label"] and body["rejection"] is None


# ---- compare: fitted on validation, measured on --unknown --------------------------------------

def test_compare_fits_the_ensembles_rule_and_measures_it_on_the_unknown_folder(halves, tmp_path):
    data = make_halves(tmp_path / "data")
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    for i, im in enumerate(green_noise(6, seed=7)):
        # Green noise over the whole picture: the green class's colour, but on both halves and noisy.
        im.resize((48, 48)).convert("L").convert("RGB").save(unknown / f"grey_{i}.png")
    run = tmp_path / "run"
    compare_halves(data, run, tmp_path / "cache", "--unknown", str(unknown), "--keep", "0.9")
    # The saved ensemble keeps at least keep of its validation images when loaded again.
    val = [r.path for r in load_split(run / SPLIT_NAME, data).subset("val")]
    details = ic.load_model(run / "models" / "ensemble", backend="torch").predict_details(val)[1]
    assert np.mean([not d["unknown"] for d in details]) >= 0.9
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ensemble"]["outcome"] == "kept"
    card = json.loads((run / "models" / "ensemble" / CARD_NAME).read_text())
    entry = card["rejection"]
    assert entry["score"] == P_VALUE and entry["keep"] == 0.9 and list(entry["kinds"]) == [MEMBER_P_VALUE]
    assert entry["images"] == metrics["ensemble"]["val_images"] and entry["kept"] >= 0.9
    rows = {m["name"]: m for m in metrics["models"]}
    for name in (*ARCHS, "ensemble"):
        open_set = rows[name]["open_set"]
        # The test half of the folder (the other 3 are the choice's, which a folder not of people skips).
        assert open_set["method"] == UNKNOWN_FOLDER and open_set["unknown_images"] == 3, name
        assert open_set["known_images"] == rows[name]["test"]["n"] and open_set["keep"] == 0.9
        assert 0.0 <= open_set["auroc"] <= 1.0 and 0.0 <= open_set["unknown_accept_rate"] <= 1.0
    assert rows["ensemble"]["open_set"]["score"] == P_VALUE
    assert metrics["timings"]["ensemble_rejection_seconds"] > 0
    study = Study.load(run)
    assert next(m for m in study.models if m.name == "ensemble").open_set.method == UNKNOWN_FOLDER
    assert "an image is as strange as its strangest member finds it" in (run / "report.md").read_text()
    print(f"ensemble rule fit {metrics['timings']['ensemble_rejection_seconds']:.2f} s of "
          f"{metrics['timings']['total_seconds']:.1f} s; ensemble open set {rows['ensemble']['open_set']}")


def test_evaluate_unknown_measures_the_ensembles_rule(pair, tmp_path):
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    for i, im in enumerate(green_noise(5, seed=11)):
        im.save(unknown / f"green_{i}.png")
    split = pair["members"]["a"] / SPLIT_NAME
    args = ["evaluate", str(pair["ens"]), str(pair["data"]), "--split", str(split), "--subset", "test", "--no-speed",
            "--backend", "torch", "--unknown", str(unknown)]
    assert main([*args, "--out", str(tmp_path / "on")]) == 0
    o = Study.load(tmp_path / "on").models[0].open_set
    assert o is not None and o.method == UNKNOWN_FOLDER and o.unknown_images == 5 and o.score == P_VALUE
    # Green noise, which both members reject, is all rejected. AUROC is not quite 1: a p-value bottoms
    # out at 0 (stranger than every validation image), and a known test image can tie the noise there.
    assert o.unknown_accept_rate == 0.0 and o.auroc >= 0.9
    assert main([*args, "--out", str(tmp_path / "off"), "--no-reject"]) == 0
    assert Study.load(tmp_path / "off").models[0].open_set is None
