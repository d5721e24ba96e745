"""Report rendering from a study built with real metrics on real (tiny) images (study_helpers:
through the typed results, as ``compare`` builds it); metrics.json reads back into the same study."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from study_helpers import CLASSES, make_study, make_study_json

from image_classifier.report import write_report
from image_classifier.report.tables import format_terminal_table, per_image_ms
from image_classifier.results import COLUMNS, Study


def test_report_files_and_consistency(tmp_path):
    study = make_study(tmp_path)
    run = tmp_path / "run"
    files = write_report(study, run)
    for p in (files.html, files.markdown, files.csv, files.metrics_json):
        assert p.is_file() and p.stat().st_size > 0
    for name in ("tiny_a", "tiny_b"):
        assert (run / f"plots/{name}-confusion.png").is_file()
        assert (run / f"plots/{name}-training.png").is_file()
        assert (run / f"plots/{name}-errors.png").is_file()
    with Image.open(run / "plots/tiny_a-confusion.png") as im:
        assert im.size[0] > 100

    rows = list(csv.DictReader(files.csv.open()))
    assert list(rows[0]) == list(COLUMNS)
    metrics = json.loads(files.metrics_json.read_text())
    for row, m in zip(rows, metrics["models"]):
        assert row["model"] == m["name"]
        assert float(row["test_accuracy"]) == m["test"]["accuracy"]
        assert float(row["test_accuracy_ci_low"]) == m["test"]["accuracy_ci"][0]
        assert float(row["latency_ms_p50"]) == m["speed"]["latency_ms_p50"]
    assert [r["selected"] for r in rows] == ["True", "False"]
    assert metrics["timings"]["report_seconds"] > 0

    table = format_terminal_table(Study.from_json(metrics))
    assert "tiny_a *" in table and "tiny_b" in table


def test_metrics_json_reads_back_into_the_same_study(tmp_path):
    study = make_study(tmp_path)
    files = write_report(study, tmp_path / "run")
    loaded = Study.load(tmp_path / "run")
    assert loaded == study  # every field, plots and report timing included
    assert loaded.to_json() == json.loads(files.metrics_json.read_text())
    assert loaded.report_path == files.html
    assert loaded.best.name == "tiny_a"
    errors = loaded.model("tiny_b").errors
    assert errors and all(e.true != e.predicted for e in errors)
    # Written again from what was read, the files are the same.
    again = write_report(loaded, tmp_path / "again")
    assert again.csv.read_text() == files.csv.read_text()
    # (but for the time the report took, its last line)
    assert again.markdown.read_text().splitlines()[:-1] == files.markdown.read_text().splitlines()[:-1]


def test_a_model_whose_forward_pass_is_a_part_is_costed_by_its_file_to_label_time(tmp_path):
    data = make_study_json(tmp_path)
    # tiny_b as an ensemble with a face member: its timing says the forward pass leaves dlib's faces out.
    data["models"][1].update(family="ensemble")
    data["selection"]["best"] = "tiny_b"  # the headline describes the served model
    data["models"][1]["speed"].update(latency_ms_p50=40.0, e2e_latency_ms_p50=700.0, forward_is_whole=False)
    study = Study.from_json(data)
    rows = {r["model"]: r for r in study.rows()}
    assert (rows["tiny_a"]["forward_is_whole"], rows["tiny_b"]["forward_is_whole"]) == (True, False)
    assert (per_image_ms(rows["tiny_a"]), per_image_ms(rows["tiny_b"])) == (1.5, 700.0)
    md = write_report(study, tmp_path / "run").markdown.read_text()
    assert "700 ms per image from file to label" in md and "which alone takes 40.0 ms" in md
    # metrics.json from before the field: a face model's forward pass was the part, a CNN's the whole.
    for family, whole in (("face", False), ("cnn", True)):
        del data["models"][0]["speed"]["forward_is_whole"]
        data["models"][0]["family"] = family
        assert Study.from_json(data).models[0].speed.forward_is_whole is whole
        data["models"][0]["speed"]["forward_is_whole"] = True


def test_html_is_self_contained_and_escaped(tmp_path):
    study = make_study(tmp_path)
    files = write_report(study, tmp_path / "run")
    text = files.html.read_text()
    # No resource may come from anywhere but the file itself.
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", text)
    assert "<link" not in text and "<script" not in text.lower().replace("&lt;script", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Test &lt;b&gt;study&lt;/b&gt;" in text
    srcs = re.findall(r'src="([^"]+)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    # Leads with the answer, and says what the study's numbers were measured on.
    assert text.index("Served model (chosen on the training and validation images): tiny_a") < text.index('id="comparison"')
    assert "351" in text and "0.94" in text
    assert "McNemar" in text
    md = files.markdown.read_text()
    assert "<script>" not in md and "&lt;script>" in md
    assert "classes 5 -> 3" in md  # '>' needs no escaping and stays readable
    assert "cost $5 \\| cheap" in md


def test_single_model_report_without_selection(tmp_path):
    study = make_study(tmp_path)
    study.models = study.models[:1]
    study.pairwise = []
    study.selection = None
    files = write_report(study, tmp_path / "run")
    assert "tiny_a: test accuracy" in files.html.read_text()


@pytest.mark.browser
@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no chromium")
def test_report_renders_in_chromium(tmp_path):
    study = make_study(tmp_path)
    files = write_report(study, tmp_path / "run")
    shot = tmp_path / "shot.png"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", f"--screenshot={shot}", "--window-size=420,2000",
                    files.html.as_uri()], check=True, capture_output=True, timeout=120)
    with Image.open(shot) as im:
        arr = np.asarray(im.convert("L"))
    # Rendered content, not a blank page: plenty of non-white pixels.
    assert (arr < 200).mean() > 0.02


def test_suspect_labels_show_with_their_face_in_both_reports(tmp_path):
    run = tmp_path / "run"
    thumb = run / "plots" / "suspect_labels" / "0.jpg"
    thumb.parent.mkdir(parents=True)
    Image.new("RGB", (112, 112), (200, 150, 120)).save(thumb)
    data = make_study_json(tmp_path)
    entry = {"path": "Kobe & Co/<b>x</b>.jpg", "label": CLASSES[1], "kind": "another_class", "shows": CLASSES[0],
             "face": 0, "box": [1, 2, 3, 4], "group_photos": 9, "distance": 0.3, "label_distance": 0.8,
             "reason": "...", "thumbnail": "plots/suspect_labels/0.jpg"}
    data["data"]["faces"] = {"per_class": {c: {"none": 1, "one": 8, "several": 1} for c in CLASSES}, "images": 30,
                             "with_face": 27, "detection_rate": 0.9, "methods": {"hog": 27}, "seconds": 1.0,
                             "suspect_labels": [entry]}
    files = write_report(Study.from_json(data), run)
    text = files.html.read_text()
    section = text[text.index("Suspect labels"):]
    assert "Kobe &amp; Co/&lt;b&gt;x&lt;/b&gt;.jpg" in section and "<b>x</b>" not in section
    assert "looks like &lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert 'src="data:image/jpeg;base64,' in section
    md = files.markdown.read_text()
    assert "### Suspect labels" in md and "1 photos probably show someone other" in md
    # A run whose survey found none says so; one without a survey has no section.
    data["data"]["faces"]["suspect_labels"] = []
    assert "No photo&#x27;s faces disagree with its folder" in write_report(Study.from_json(data), run).html.read_text()
    data["data"]["faces"] = None
    assert "Suspect labels" not in write_report(Study.from_json(data), tmp_path / "run2").html.read_text()
