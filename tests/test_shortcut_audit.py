"""The shortcut audit (evaluate.shortcut, compare, the report): the masks cover what they claim,
hand-built real networks that read the background or the face are told apart, the report's rule
fires both ways, and compare on a few real photos writes the columns and the section."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import SHARED
from image_classifier.cli import main
from image_classifier.evaluate.evaluation import DecodeCache, LabelledImage, evaluate_classifier
from image_classifier.evaluate.shortcut import (
    BOTTOM_MARGIN, FILL, SIDE_MARGIN, TOP_MARGIN, AuditImages, audit_classifier, example_strip, face_region,
    face_regions, greyscale, keep_faces, make_variants, mask_faces,
)
from image_classifier.faces import Face, FaceAnalysis
from image_classifier.inference.classifier import Classifier
from image_classifier.models.net import ClassifierNet
from image_classifier.models.registry import ArchSpec, register_arch, unregister_arch
from image_classifier.preprocessing import Preprocessing
from image_classifier.recipe import Augmentation, Phase, Recipe
from image_classifier.report import write_report
from image_classifier.report.narrative import (
    SHORTCUT_MIN_IMAGES, reads_colour, reads_without_face, shortcut_sentences,
)
from image_classifier.results import COLUMNS, ShortcutAudit, Study

from study_helpers import make_study_json

W, H = 100, 80
BOX = (30.0, 20.0, 50.0, 40.0)  # a 20 x 20 face


def _photo(seed: int = 0, size: tuple[int, int] = (W, H)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _analysis(boxes, size=(W, H)) -> FaceAnalysis:
    return FaceAnalysis(size[0], size[1], [Face(tuple(b), (), "hog", 1.0) for b in boxes])


# ---- the masks ---------------------------------------------------------------------------------

def test_the_face_region_grows_by_the_stated_margins_and_stays_inside():
    x0, y0, x1, y1 = face_region(BOX, W, H)
    assert (x0, y0, x1, y1) == (30 - SIDE_MARGIN * 20, 20 - TOP_MARGIN * 20, 50 + SIDE_MARGIN * 20,
                                40 + BOTTOM_MARGIN * 20)
    assert x0 <= BOX[0] and y0 <= BOX[1] and x1 >= BOX[2] and y1 >= BOX[3]  # covers dlib's box
    assert face_region((-5, -5, 10, 10), W, H)[:2] == (0, 0)
    assert face_region((90, 70, 99, 79), W, H)[2:] == (W, H)


def test_the_masks_cover_what_they_claim():
    image = _photo()
    original = np.asarray(image)
    x0, y0, x1, y1 = face_region(BOX, W, H)
    inside = np.zeros((H, W), dtype=bool)
    inside[y0:y1, x0:x1] = True

    masked = np.asarray(mask_faces(image, [(x0, y0, x1, y1)]))
    assert (masked[inside] == FILL).all()  # the whole enlarged face is grey
    assert (masked[~inside] == original[~inside]).all()  # nothing else changed

    kept = np.asarray(keep_faces(image, [(x0, y0, x1, y1)]))
    assert (kept[~inside] == FILL).all()  # everything but the face is grey
    assert (kept[inside] == original[inside]).all()  # the face is untouched
    assert np.asarray(image).tolist() == original.tolist()  # the input is not modified


def test_every_face_is_masked_and_boxes_follow_the_picture_size():
    # The analysis is in the file's pixels (200 x 160); the picture a model gets is half that.
    analysis = _analysis([(60, 40, 100, 80), (150, 100, 170, 120)], size=(2 * W, 2 * H))
    boxes = face_regions(analysis, W, H)
    assert boxes[0] == face_region(BOX, W, H) and len(boxes) == 2
    variants = make_variants(_photo(), boxes)
    masked = np.asarray(variants["face_masked"])
    for x0, y0, x1, y1 in boxes:
        assert (masked[y0:y1, x0:x1] == FILL).all()
    assert face_regions(FaceAnalysis(W, H, []), W, H) == [] and face_regions(None, W, H) == []
    none = make_variants(_photo(), [])
    assert none["face_masked"] is None and none["face_only"] is None and none["greyscale"] is not None


def test_greyscale_has_three_equal_channels():
    grey = np.asarray(greyscale(_photo()))
    assert grey.shape == (H, W, 3)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert grey.std() > 10  # the picture is still there


def test_the_example_strip_shows_the_three_variants(tmp_path):
    variants = make_variants(_photo(), [face_region(BOX, W, H)])
    path = example_strip(variants, tmp_path / "plots" / "x.png", height=80, gap=6)
    with Image.open(path) as im:
        assert im.size == (3 * W + 2 * 6, 80)
        strip = np.asarray(im.convert("RGB"))
    assert (strip[:, :W] == np.asarray(variants["face_masked"])).all()
    assert (strip[:, W + 6:2 * W + 6] == np.asarray(variants["face_only"])).all()


# ---- the audit on real (hand-built) networks ---------------------------------------------------

BACKGROUND = {"red": (200, 40, 40), "green": (40, 200, 40)}  # "kit or court" colour of each class
FACE = {"blue": (60, 60, 230), "yellow": (230, 230, 60)}  # a face colour per class, on one grey background
SIZE = (64, 48)
FACE_BOX = (16.0, 8.0, 48.0, 40.0)  # a third of the picture: the face outweighs the grey fill's warm cast


class ChannelReader(nn.Module):
    """Logits from the mean of each channel: a network that answers from colour alone."""

    def __init__(self, weights: list[list[float]]) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(3, len(weights), bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor(weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pool(x).flatten(1))


def _folder(root: Path, colours: dict[str, tuple[int, int, int]], *, where: str, n: int = 12) -> list[LabelledImage]:
    """``n`` PNGs per class: the class colour is the background (``where="background"``) or the face."""
    items = []
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = np.empty((SIZE[1], SIZE[0], 3), np.uint8)
            arr[:] = colour if where == "background" else (128, 128, 128)
            if where == "background":  # skin over the whole enlarged face region: only the kit says who
                x0, y0, x1, y1 = face_region(FACE_BOX, *SIZE)
                arr[y0:y1, x0:x1] = (210, 170, 140)
            else:  # the class colour on the face box alone
                x0, y0, x1, y1 = (int(v) for v in FACE_BOX)
                arr[y0:y1, x0:x1] = colour
            arr[0, i % SIZE[0]] = (i * 20) % 256  # distinct files (the cache keys by content)
            path = root / name / f"{i}.png"
            Image.fromarray(arr).save(path)
            items.append(LabelledImage(path, f"{name}/{i}.png", name))
    return items


def _audit(model: nn.Module, classes: list[str], items: list[LabelledImage], analyses: dict[str, FaceAnalysis]):
    classifier = Classifier(model, classes, Preprocessing(32))
    cache = DecodeCache()
    ev = evaluate_classifier(classifier, items, cache=cache)
    return ev, audit_classifier(classifier, ev, AuditImages(analyses, cache))


def test_a_network_reading_the_background_stays_right_without_the_face(tmp_path):
    items = _folder(tmp_path / "bg", BACKGROUND, where="background")
    analyses = {it.rel_path: _analysis([FACE_BOX], SIZE) for it in items}
    # One photo has no face found, another is missing from the survey: both left out of the face columns.
    analyses[items[0].rel_path] = FaceAnalysis(*SIZE, [])
    del analyses[items[-1].rel_path]
    ev, audit = _audit(ChannelReader([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]), ["red", "green"], items, analyses)
    assert ev.metrics.accuracy == 1.0
    assert audit.images == len(items) == audit.greyscale_images
    assert audit.images_with_face == len(items) - 2 and audit.no_face == 2
    assert audit.accuracy_with_face == 1.0
    assert audit.face_masked == 1.0  # the colour is all around the face
    # Only the face (skin on grey) and greyscale (equal channels: tied logits) carry no class: the
    # first class is always answered, which is right for half the photos.
    assert audit.face_only == 0.5
    assert audit.greyscale == 0.5
    assert audit.chance == 0.5 and audit.chance_uniform == 0.5 and audit.chance_majority == 0.5
    assert reads_without_face(audit) is True and reads_colour(audit) is True


def test_a_network_reading_the_face_falls_to_chance_without_it(tmp_path):
    items = _folder(tmp_path / "face", FACE, where="face")
    analyses = {it.rel_path: _analysis([FACE_BOX], SIZE) for it in items}
    # Blue minus red decides: the face alone carries it.
    ev, audit = _audit(ChannelReader([[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]]), ["blue", "yellow"], items, analyses)
    assert ev.metrics.accuracy == 1.0
    assert audit.no_face == 0 and audit.images_with_face == len(items)
    assert audit.face_only == 1.0
    assert audit.face_masked == 0.5  # the grey fill says "yellow" for every photo
    assert reads_without_face(audit) is False


def test_without_a_face_survey_only_greyscale_is_audited(tmp_path):
    items = _folder(tmp_path / "bg", BACKGROUND, where="background", n=4)
    classifier = Classifier(ChannelReader([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]), ["red", "green"], Preprocessing(32))
    cache = DecodeCache()
    ev = evaluate_classifier(classifier, items, cache=cache)
    images = AuditImages(None, cache)
    audit = audit_classifier(classifier, ev, images)
    assert audit.face_masked is None and audit.face_only is None and audit.no_face == len(items)
    assert audit.greyscale == 0.5 and not audit.faces_looked_for and images.example is None
    # The variants were built from the pictures the evaluation decoded: nothing decoded twice.
    assert len(cache._images) == len(items)


# ---- the rule and the report --------------------------------------------------------------------

def _numbers(masked: float, grey: float, full: float = 0.9, chance: float = 0.4, n: int = 30) -> ShortcutAudit:
    return ShortcutAudit(images=n, accuracy=full, images_with_face=n, accuracy_with_face=full, no_face=0,
                         face_masked=masked, face_only=0.8, greyscale=grey, greyscale_images=n,
                         chance_uniform=1 / 3, chance_majority=chance)


@pytest.mark.parametrize("masked, expected", [(0.66, True), (0.65, True), (0.64, False), (0.4, False)])
def test_the_background_rule_is_half_the_margin_over_chance(masked, expected):
    # chance 0.4, full 0.9: the mark is 0.4 + 0.5 * 0.5 = 0.65.
    assert reads_without_face(_numbers(masked, 0.9)) is expected


@pytest.mark.parametrize("grey, expected", [(0.5, True), (0.65, True), (0.66, False), (0.9, False)])
def test_the_colour_rule_is_half_the_margin_over_chance(grey, expected):
    assert reads_colour(_numbers(0.5, grey)) is expected


def test_the_rule_says_nothing_on_too_few_images_or_no_margin():
    assert reads_without_face(_numbers(0.9, 0.9, n=SHORTCUT_MIN_IMAGES - 1)) is None
    assert reads_colour(_numbers(0.9, 0.9, full=0.4)) is None  # no better than chance to begin with
    no_faces = _numbers(0.9, 0.9)
    no_faces.face_masked, no_faces.images_with_face = None, 0
    assert reads_without_face(no_faces) is None


def _study_with_audits(tmp_path: Path) -> Study:
    data = make_study_json(tmp_path)
    data["models"][0]["shortcut"] = _numbers(0.85, 0.42).to_json()  # reads background, reads colour
    data["models"][1]["shortcut"] = _numbers(0.41, 0.88).to_json()  # needs the face, holds in grey
    return Study.from_json(data)


def test_the_report_section_renders_with_the_findings(tmp_path):
    (tmp_path / "plain").mkdir()
    assert shortcut_sentences(Study.from_json(make_study_json(tmp_path / "plain"))) == []
    study = _study_with_audits(tmp_path)
    sentences = shortcut_sentences(study)
    assert sentences[0].startswith("The rule:") and "50%" in sentences[0] and "40.0%" in sentences[0]
    assert any("tiny_a stays far above chance without the face: 85.0%" in s and "reads background" in s
               for s in sentences), sentences
    assert any("tiny_a collapses in greyscale: 42.0%" in s for s in sentences), sentences
    assert any(s.startswith("tiny_b relies on the face: with the face masked it falls to 41.0%") for s in sentences)
    assert any(s.startswith("tiny_b holds up in greyscale: 88.0%") for s in sentences)
    # An example strip written by compare is kept by the report and embedded.
    run = tmp_path / "run"
    variants = make_variants(_photo(), [face_region(BOX, W, H)])
    example_strip(variants, run / "plots" / "shortcut-example.png")
    study.plots["shortcut_example"] = "plots/shortcut-example.png"
    files = write_report(study, run)
    html = files.html.read_text()
    assert 'id="shortcut"' in html and 'href="#shortcut"' in html
    section = html[html.index('id="shortcut"'):html.index('id="models"')]
    assert "tiny_a" in section and "0.850" in section and "0.420" in section and "data:image/png;base64," in section
    md = files.markdown.read_text()
    assert "## Is it reading the face? The shortcut audit" in md and "(plots/shortcut-example.png)" in md
    rows = list(csv.DictReader(files.csv.open()))
    assert list(rows[0]) == list(COLUMNS)
    assert [float(r["acc_face_masked"]) for r in rows] == [0.85, 0.41]
    assert [float(r["acc_greyscale"]) for r in rows] == [0.42, 0.88]
    assert [float(r["acc_face_only"]) for r in rows] == [0.8, 0.8]
    loaded = Study.load(run)
    assert loaded.models[0].shortcut == study.models[0].shortcut
    assert loaded.plots["shortcut_example"] == "plots/shortcut-example.png"
    # In Spanish, with the decimal comma.
    es = write_report(Study.load(run), tmp_path / "es", lang="es")
    es_html = es.html.read_text()
    assert "La auditoría de atajos" in es_html and "0,850" in es_html
    assert "tiny_a queda muy por encima del azar sin la cara" in es_html


def test_old_metrics_without_the_audit_still_load_and_render(tmp_path):
    study = Study.from_json(make_study_json(tmp_path))
    assert all(m.shortcut is None for m in study.models)
    files = write_report(study, tmp_path / "run")
    assert 'id="shortcut"' not in files.html.read_text()
    rows = list(csv.DictReader(files.csv.open()))
    assert all(r["acc_face_masked"] == r["acc_face_only"] == r["acc_greyscale"] == "" for r in rows)
    assert ShortcutAudit.from_json(_numbers(0.5, 0.5).to_json()) == _numbers(0.5, 0.5)


# ---- compare on a few real photos --------------------------------------------------------------

MOBILENET = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
PER_CLASS = 14
TINY = "tiny_audit"


def _tiny_net(num_classes: int, backbone_state=None) -> ClassifierNet:
    backbone = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    )
    return ClassifierNet(backbone, nn.Linear(16, num_classes), 16)


@pytest.fixture(scope="module")
def audited_run(athletes_dir, tmp_path_factory):
    """compare on the first photos of each athlete: a tiny CNN and the face model, faces on."""
    if not MOBILENET.is_file():
        pytest.skip(f"needs {MOBILENET}")
    register_arch(ArchSpec(TINY, _tiny_net, Preprocessing(32), lambda: Recipe(
        phases=[Phase("scratch", epochs=2, lr=5e-3, trainable_from=0)], batch_size=16, precision="fp32",
        augmentation=Augmentation(rotation=0, width_shift=0, height_shift=0, shear=0, zoom=0))), replace=True)
    root = tmp_path_factory.mktemp("audit")
    data = root / "people"
    for cls in ("Kobe Bryant", "Maria Sharapova", "ronaldo"):
        (data / cls).mkdir(parents=True)
        for src in sorted((athletes_dir / cls).iterdir())[:PER_CLASS]:
            (data / cls / src.name).write_bytes(src.read_bytes())
    run = root / "run"
    argv = ["compare", str(data), "--models", f"{TINY},face_embedding", "--out", str(run), "--seed", "0",
            "--val", "0.25", "--test", "0.3", "--speed-repeats", "1", "--no-export", "--no-progress",
            "--cache-dir", str(root / "cache"), "--weights", f"mobilenet_v2={MOBILENET}",
            "--set", "face_embedding:phases.frozen.epochs=2", "--set", "face_embedding:feature_views=1"]
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
            assert main(argv) == 0
        yield {"run": run, "argv": argv}
    finally:
        unregister_arch(TINY)


@pytest.mark.slow
def test_compare_audits_every_model_and_reports_it(audited_run):
    run = audited_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    test_n = sum(metrics["data"]["split"]["sizes"]["test"].values())
    rows = {r["model"]: r for r in csv.DictReader((run / "comparison.csv").open())}
    assert set(rows) == {TINY, "face_embedding"}
    for m in metrics["models"]:
        a = m["shortcut"]
        assert a["images"] == a["greyscale_images"] == test_n
        assert a["images_with_face"] + a["no_face"] == test_n and a["images_with_face"] > 0
        assert a["accuracy"] == m["test"]["accuracy"]  # the plain accuracy is the test split's own
        assert a["chance_uniform"] == pytest.approx(1 / 3)
        for key, column in (("face_masked", "acc_face_masked"), ("face_only", "acc_face_only"),
                            ("greyscale", "acc_greyscale")):
            assert 0.0 <= a[key] <= 1.0 and float(rows[m["name"]][column]) == a[key]
    # The images with a face are those the survey found one in (the face/no-face split of the table).
    face_model = next(m for m in metrics["models"] if m["name"] == "face_embedding")
    assert face_model["shortcut"]["images_with_face"] == face_model["faces"]["test_images_face"]
    assert metrics["timings"]["shortcut_audit_seconds"] > 0
    html = (run / "report.html").read_text()
    section = html[html.index('id="shortcut"'):html.index('id="models"')]
    assert "The rule:" in section and "data:image/png;base64," in section
    with Image.open(run / metrics["plots"]["shortcut_example"]) as im:
        assert im.width > 2 * im.height  # three photos side by side
    assert "## Is it reading the face? The shortcut audit" in (run / "report.md").read_text()


@pytest.mark.slow
def test_without_an_unknown_folder_the_face_model_is_measured_on_its_descriptors(audited_run):
    metrics = json.loads((audited_run["run"] / "metrics.json").read_text())
    face_model = next(m for m in metrics["models"] if m["name"] == "face_embedding")
    o = face_model["open_set"]
    # Leave-one-class-out on the survey's descriptors: every left-out athlete's test faces are the
    # unknowns once, scored by the distance to the other athletes' training faces (a p-value).
    assert o["method"] == "leave-one-class-out" and o["score"] == "p_value"
    assert o["unknown_images"] == face_model["faces"]["test_images_face"]
    assert o["known_images"] == 2 * o["unknown_images"]
    assert o["auroc"] > 0.8  # three different people: a stranger's face is far from the others'


@pytest.mark.slow
def test_no_audit_skips_it(audited_run):
    run = audited_run["run"]
    argv = [*audited_run["argv"], "--no-audit"]
    assert main(argv) == 0  # the models are reused: only evaluation and the report run again
    metrics = json.loads((run / "metrics.json").read_text())
    assert all("shortcut" not in m for m in metrics["models"])
    assert "shortcut_audit_seconds" not in metrics["timings"] and "--no-audit" in metrics["command"]
    rows = list(csv.DictReader((run / "comparison.csv").open()))
    assert all(r["acc_face_masked"] == r["acc_greyscale"] == "" for r in rows)
    assert 'id="shortcut"' not in (run / "report.html").read_text()
