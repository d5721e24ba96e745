"""Everyone in the photo: a real face model on real collages of real faces (four of the people it
knows and a stranger, and one with more faces than the five largest that decide a photo) answers
each face on its own, in Python, ``predict --json``, the API (checked against its OpenAPI
document) and the page (a box and a name on each face, in Chromium)."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import UNKNOWN_PEOPLE
from face_helpers import face_collage, tile_of
from serve_fixtures import check_response

from image_classifier import load_model
from image_classifier.faces import FaceAnalysis, FaceCache, FaceStream, analyse_bytes, describe_every_face
from image_classifier.faces.store import MIN_FILES_FOR_POOL
from image_classifier.fileio import sha256_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _single_face_training_photos(face_model: dict, per_class: int) -> list[tuple[Path, str]]:
    """The model's own training photos (in name order) that show exactly one face, a frontal one (found
    by the first, HOG, step: a collage is searched as one photo, and the cascade's later steps only
    run when that step finds no face at all): (path, class)."""
    with open(face_model["split"], newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    cache = FaceCache(face_model["cache"])
    picked: dict[str, list[Path]] = {}
    for r in sorted(rows, key=lambda r: r["rel_path"]):
        path = face_model["data"] / r["rel_path"]
        faces = cache.analyse_data(path.read_bytes(), r["sha256"], str(path)).faces
        if len(picked.get(r["class"], [])) < per_class and len(faces) == 1 and faces[0].method == "hog":
            picked.setdefault(r["class"], []).append(path)
    return [(p, cls) for cls in sorted(picked) for p in picked[cls]]


@pytest.fixture(scope="module")
def group(face_model, tmp_path_factory) -> dict:
    """Four known faces (two of the first athlete, one of each other) and a stranger, in a collage."""
    if not UNKNOWN_PEOPLE.is_dir():
        pytest.skip("needs ../shared/datasets/unknown_people")
    known = _single_face_training_photos(face_model, 2)
    chosen = [known[0], known[1], known[2], known[-1]]
    stranger = sorted(UNKNOWN_PEOPLE.iterdir())[0]
    path = tmp_path_factory.mktemp("group") / "group.jpg"
    tiles = face_collage([p for p, _ in chosen] + [stranger], path)
    return {"path": path, "tiles": tiles, "expected": [cls for _, cls in chosen] + ["unknown"]}


def _named(faces: list[dict], tiles: list, expected: list[str]) -> dict[int, str]:
    """tile index -> the label of the face found in it."""
    out = {}
    for face in faces:
        tile = tile_of(face["box"], tiles)
        assert tile is not None and tile not in out, f"a face outside the tiles or two in one: {face['box']}"
        out[tile] = face["label"]
    return out


def test_every_face_of_a_group_photo_is_named_and_the_stranger_is_unknown(face_model, group):
    model = load_model(face_model["model"], backend="torch", face_cache=FaceCache(face_model["cache"]))
    probs, details = model.predict_details(group["path"])
    d = details[0]
    assert d["faces_found"] == len(d["faces"]) == 5
    assert _named(d["faces"], group["tiles"], group["expected"]) == dict(enumerate(group["expected"]))
    # The photo's own answer is still the one face that decides (the largest like a known person's).
    decided = [i for i, f in enumerate(d["faces"]) if f["decided"]]
    assert decided == [d["face_index"]] and d["faces"][d["face_index"]]["box"] == d["face"]
    assert d["face_index"] == min(i for i, f in enumerate(d["faces"]) if f["distance"] <= model.face_path.head.max_distance)
    # Each face's answer is the face head's on that face alone; the deciding face's is the photo's
    # (the same, unless it is far enough from the training faces to answer with the whole photo).
    analysis = analyse_bytes(group["path"].read_bytes())
    alone = model.face_path.probabilities(analysis.descriptors.astype(np.float64))
    for i, (face, row) in enumerate(zip(d["faces"], alone)):
        if i == d["face_index"] and d["face_distance"] > model.face_path.alone_within:
            row = probs[0]
        assert face["closest"]["label"] == model.classes[int(row.argmax())]
        assert face["probability"] == pytest.approx(float(row.max()), abs=1e-6)


def test_faces_past_the_five_largest_are_described_the_same_way(face_model, tmp_path):
    known = _single_face_training_photos(face_model, 3)
    strangers = sorted(UNKNOWN_PEOPLE.iterdir())[:2] if UNKNOWN_PEOPLE.is_dir() else []
    photos = [p for p, _ in known] + list(strangers)
    path = tmp_path / "crowd.jpg"
    tiles = face_collage(photos, path)
    data = path.read_bytes()
    analysis = analyse_bytes(data)
    assert len(analysis.faces) > 5 and len(analysis.descriptors) == 5  # the largest five are described
    # Describing the others from their landmarks gives the pipeline's own descriptors: check it on
    # faces the pipeline described (from an analysis that kept only the first two).
    cut = FaceAnalysis(analysis.width, analysis.height, analysis.faces, analysis.descriptors[:2])
    again = describe_every_face(cut, data)
    assert np.array_equal(again.descriptors[:5], analysis.descriptors)
    assert len(again.descriptors) == len(analysis.faces)
    model = load_model(face_model["model"], backend="torch", face_cache=FaceCache(face_model["cache"]))
    d = model.predict_details(path)[1][0]
    assert all(f["label"] is not None and f["distance"] is not None for f in d["faces"])
    expected = [cls for _, cls in known] + ["unknown"] * len(strangers)
    named = _named(d["faces"], tiles, expected)
    right = sum(named[t] == expected[t] for t in named)
    assert right >= len(named) - 1  # a real network on re-cropped faces: at most one slip


def test_predict_json_and_text_name_every_face(face_model, group):
    run = subprocess.run([sys.executable, "-m", "image_classifier", "predict", str(face_model["model"]),
                          str(group["path"]), "--json", "--backend", "torch"], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert run.returncode == 0, run.stderr[-2000:]
    faces = json.loads(run.stdout)["predictions"][0]["faces"]
    assert _named(faces, group["tiles"], group["expected"]) == dict(enumerate(group["expected"]))
    text = subprocess.run([sys.executable, "-m", "image_classifier", "predict", str(face_model["model"]),
                           str(group["path"]), "--backend", "torch"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert text.returncode == 0
    listed = text.stdout.split("faces: ")[1].strip().rstrip(")").split(", ")
    assert listed == [f["label"] for f in faces]


def test_the_api_answers_every_face_as_its_openapi_document_says(face_model, group):
    from image_classifier.serve import ModelStore, create_app

    store = ModelStore.from_paths([face_model["model"]]).load()
    try:
        client = create_app(store).test_client()
        doc = client.get("/api/openapi.json").get_json()
        r = client.post("/api/predict", data={"file": (io.BytesIO(group["path"].read_bytes()), "group.jpg")})
        assert r.status_code == 200
        body = r.get_json()
        check_response(doc, "/api/predict", "post", 200, body)
        assert _named(body["faces"], group["tiles"], group["expected"]) == dict(enumerate(group["expected"]))
        assert body["threshold"]["keep"] == 0.95 and 0 < body["threshold"]["kept"] <= 1
    finally:
        store.close()


@pytest.mark.browser
def test_the_page_draws_a_box_and_a_name_on_each_face(face_model, group):
    import shutil

    from playwright.sync_api import expect, sync_playwright

    from image_classifier.serve import ModelStore, create_app
    from image_classifier.serve.server import BackgroundServer

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium; scripts/test.sh does it)")
    store = ModelStore.from_paths([face_model["model"]]).load()
    try:
        with BackgroundServer(create_app(store), max_upload_bytes=10 * 1024 * 1024) as srv, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(srv.url + "/")
            page.wait_for_selector("body[data-ready=true]", timeout=30_000)
            page.set_input_files("#file-input", str(group["path"]))
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            expect(page.locator(".face-tag")).to_have_count(4)  # every face but the deciding one ...
            expect(page.locator("#face-box")).to_be_visible()  # ... which has the accent box
            img = page.locator("#preview").bounding_box()
            with Image.open(group["path"]) as shown:
                w, h = shown.size
            names = {}
            for box in [page.locator("#face-box"), *page.locator(".face-tag").all()]:
                drawn = box.bounding_box()
                x = (drawn["x"] - img["x"] + drawn["width"] / 2) * w / img["width"]
                y = (drawn["y"] - img["y"] + drawn["height"] / 2) * h / img["height"]
                names[tile_of([x, y, x, y], group["tiles"])] = box.locator(".face-name").inner_text()
            expected = {i: ("unknown" if e == "unknown" else e) for i, e in enumerate(group["expected"])}
            assert names == expected
            ROOT.joinpath("test-artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(ROOT / "test-artifacts" / "group-photo.png"), full_page=True)
            assert errors == []
            browser.close()
    finally:
        store.close()


def test_an_ensemble_member_answers_every_face_too(face_model, group, tmp_path):
    """An ensemble's face member is finished, never judged: its faces are answered by its own rule,
    and the whole answer stays JSON (the API serialises it)."""
    from image_classifier.inference.ensemble import write_ensemble
    from image_classifier.serve import ModelStore, create_app

    ensemble = write_ensemble(tmp_path / "ensemble", {"face_embedding": face_model["model"]},
                              {"face_embedding": 1.0})
    store = ModelStore.from_paths([ensemble]).load()
    try:
        client = create_app(store).test_client()
        r = client.post("/api/predict", data=group["path"].read_bytes())
        assert r.status_code == 200, r.get_json()
        check_response(client.get("/api/openapi.json").get_json(), "/api/predict", "post", 200, r.get_json())
        member = r.get_json()["members"][0]
        assert _named(member["faces"], group["tiles"], group["expected"]) == dict(enumerate(group["expected"]))
    finally:
        store.close()


def test_sort_s_face_workers_describe_every_face_of_a_crowd(face_model, tmp_path):
    """With ``every_face`` (sort's face stream), the workers describe the faces past the five largest
    too, as describe_every_face does, and cache them: answering them needs no second decode."""
    known = _single_face_training_photos(face_model, 3)
    path = tmp_path / "crowd.jpg"
    face_collage([p for p, _ in known], path)
    files = [path, *(p for p, _ in known)][:MIN_FILES_FOR_POOL]  # enough files for the worker pool
    assert len(files) == MIN_FILES_FOR_POOL
    cache = FaceCache(tmp_path / "cache")
    with FaceStream(cache, [(f, sha256_file(f)) for f in files], workers=2, every_face=True) as stream:
        analyses = {p: a for p, _, a, _ in stream}
    crowd = analyses[str(path)]
    assert len(crowd.faces) > 5 and len(crowd.descriptors) == 5  # the analysis itself stays the largest five
    # Cached: asked with bytes that cannot be decoded, every_face answers without decoding them.
    every = cache.every_face(crowd, b"", sha256_file(path), str(path))
    expected = describe_every_face(crowd, path.read_bytes())
    assert len(every.descriptors) == len(crowd.faces)
    np.testing.assert_allclose(every.descriptors, expected.descriptors, atol=1e-6)
