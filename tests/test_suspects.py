"""Suspect labels (``check``): photos moved on purpose into another person's folder are found, on
real faces (lfw_people12), in ``check --json``, the ``check --html`` page and compare's summary."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import copy_people
from image_classifier.cli import main
from image_classifier.data.scan import scan_dataset
from image_classifier.faces import FaceCache, survey_faces
from image_classifier.faces.suspects import ANOTHER_CLASS, find_suspect_labels, suspect_entries
from image_classifier.i18n import translator
from image_classifier.report.suspects import suspects_html
from image_classifier.results import FaceSummary

pytestmark = pytest.mark.slow

PEOPLE = ("Hans_Blix", "Jennifer_Capriati", "Laura_Bush", "Junichiro_Koizumi")
#: (person, index of the photo in name order) -> the folder it is moved to.
MOVES = {("Hans_Blix", 2): "Laura_Bush", ("Jennifer_Capriati", 4): "Junichiro_Koizumi"}


@pytest.fixture(scope="module")
def mislabelled(lfw_people12_dir, tmp_path_factory) -> tuple[Path, set[str]]:
    """Eight photos of each of four people, two of them moved into another person's folder."""
    root = tmp_path_factory.mktemp("mislabelled") / "people"
    copy_people(lfw_people12_dir, root, {p: range(0, 8) for p in PEOPLE})
    moved = set()
    for (person, k), dest in MOVES.items():
        src = sorted((root / person).iterdir())[k]
        target = root / dest / src.name
        src.rename(target)
        moved.add(target.relative_to(root).as_posix())
    return root, moved


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("face-cache")


def test_check_json_flags_the_moved_photos(mislabelled, cache_dir, capsys, monkeypatch):
    root, moved = mislabelled
    monkeypatch.setenv("IMAGE_CLASSIFIER_CACHE_DIR", str(cache_dir))
    assert main(["check", str(root), "--json", "--no-near-duplicates"]) == 0
    report = json.loads(capsys.readouterr().out)
    flagged = {s["path"]: s for s in report["suspect_labels"]}
    assert moved <= set(flagged), (moved, flagged)
    assert len(set(flagged) - moved) <= 1  # at most one correct photo flagged
    for path in moved:  # each says whom it shows: the person of the folder it came from
        entry = flagged[path]
        assert entry["kind"] == ANOTHER_CLASS
        assert entry["shows"] == next(p for (p, _), d in MOVES.items() if path.startswith(d + "/"))
        assert entry["label"] == path.split("/")[0] and entry["label_distance"] >= 0.6


def test_nothing_is_flagged_when_every_photo_is_in_its_folder(lfw_people12_dir, tmp_path, cache_dir):
    root = tmp_path / "people"
    copy_people(lfw_people12_dir, root, {p: range(0, 8) for p in PEOPLE})
    records = scan_dataset(root).records
    survey = survey_faces(records, FaceCache(cache_dir))
    report = find_suspect_labels(records, survey.analyses)
    assert report.suspects == []
    assert all(g is not None for g in report.persons.values())  # each class has its person


def test_the_html_page_shows_each_suspect_face(mislabelled, cache_dir, tmp_path, monkeypatch, capsys):
    root, moved = mislabelled
    monkeypatch.setenv("IMAGE_CLASSIFIER_CACHE_DIR", str(cache_dir))
    page = tmp_path / "check.html"
    assert main(["check", str(root), "--no-near-duplicates", "--html", str(page)]) == 0
    text = capsys.readouterr().out
    assert "Suspect labels: " in text and all(p in text for p in moved)
    html = page.read_text()
    for path in moved:
        assert f'alt="{path}" src="data:image/jpeg;base64,' in html


def test_compare_keeps_suspects_with_thumbnails_for_its_report(mislabelled, cache_dir, tmp_path):
    root, moved = mislabelled
    records = scan_dataset(root).records
    survey = survey_faces(records, FaceCache(cache_dir))
    entries = suspect_entries(records, survey.analyses, tmp_path / "plots" / "suspect_labels", tmp_path)
    assert {e["path"] for e in entries} >= moved
    for e in entries:
        assert (tmp_path / e["thumbnail"]).stat().st_size > 500
    summary = FaceSummary.from_json({**survey.to_json(), "suspect_labels": entries})
    assert FaceSummary.from_json(json.loads(json.dumps(summary.to_json()))).suspect_labels == entries
    fragment = suspects_html(entries, lambda e: "data:," if e.get("thumbnail") else None, translator("es"))
    assert fragment.count("<figure>") == len(entries) and "se parece a" in fragment
