"""The report's error gallery shows each mistake's overlay (its Grad-CAM heat map, or the face that
decided) beside the photo; the overlay paths round-trip through metrics.json, and a run saved
before them still loads."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from study_helpers import make_study_json

from image_classifier.i18n import translator
from image_classifier.report import write_report
from image_classifier.report.plots import error_gallery_figure
from image_classifier.results import Misclassified, Study
from image_classifier.runs import EXPLANATIONS_DIR

MAGENTA = (255, 0, 255)


def _magenta_pixels(path) -> int:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.int32)
    return int((np.abs(arr - np.array(MAGENTA)).max(axis=2) < 40).sum())


def test_misclassified_overlay_round_trips_and_old_files_load():
    e = Misclassified("/d/a.jpg", "a/a.jpg", "a", "b", 0.8, "explanations/m/a__a.jpg.png")
    assert Misclassified.from_json(json.loads(json.dumps(e.to_json()))) == e
    old = {"path": "/d/a.jpg", "rel_path": "a/a.jpg", "true": "a", "pred": "b", "confidence": 0.8}
    assert Misclassified.from_json(old).overlay is None
    assert "overlay" not in Misclassified.from_json(old).to_json()  # old files are written as they were


def test_the_gallery_shows_the_overlays_beside_the_photos(tmp_path):
    d = make_study_json(tmp_path)
    run = tmp_path / "run"
    a = d["models"][0]
    assert a["name"] == "tiny_a" and a["errors"] and d["models"][1]["errors"]
    folder = run / EXPLANATIONS_DIR / "tiny_a"
    folder.mkdir(parents=True)
    for i, err in enumerate(a["errors"]):  # a stand-in overlay nobody could mistake for a photo
        rel = f"{EXPLANATIONS_DIR}/tiny_a/{i}.png"
        Image.new("RGB", (60, 40), MAGENTA).save(run / rel)
        err["overlay"] = rel
    study = Study.from_json(d)
    files = write_report(study, run)

    with_overlays = _magenta_pixels(run / "plots/tiny_a-errors.png")
    without = _magenta_pixels(run / "plots/tiny_b-errors.png")
    assert with_overlays > 2000 and without < 50, (with_overlays, without)
    # The same mistakes drawn without their overlays: no magenta, so it came from the overlays.
    fig = error_gallery_figure(study.model("tiny_a").errors)
    fig.savefig(tmp_path / "plain.png")
    assert _magenta_pixels(tmp_path / "plain.png") < 50

    t = translator("en")
    html = files.html.read_text()
    assert t("report.html.errors.overlays") in html
    assert html.count(t("report.html.errors.overlays")) == 1  # tiny_b has no overlays
    assert t("report.html.errors.overlays") in files.markdown.read_text()
    saved = json.loads(files.metrics_json.read_text())
    assert [e.get("overlay") for e in saved["models"][0]["errors"]] == [e["overlay"] for e in a["errors"]]
    assert all("overlay" not in e for e in saved["models"][1]["errors"])


def test_spanish_report_explains_the_overlays_in_spanish(tmp_path):
    d = make_study_json(tmp_path)
    run = tmp_path / "run"
    (run / EXPLANATIONS_DIR / "tiny_a").mkdir(parents=True)
    err = d["models"][0]["errors"][0]
    Image.new("RGB", (60, 40), MAGENTA).save(run / EXPLANATIONS_DIR / "tiny_a" / "0.png")
    err["overlay"] = f"{EXPLANATIONS_DIR}/tiny_a/0.png"
    files = write_report(Study.from_json(d), run, lang="es")
    assert translator("es")("report.html.errors.overlays") in files.html.read_text()
