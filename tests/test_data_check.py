"""audit_dataset: duplicates, near-duplicates, label conflicts, usability verdict, JSON and table."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_image_folder, photo_like
from image_classifier.data.check import audit_dataset
from image_classifier.data.decode import load_image
from image_classifier.data.near_duplicates import compute_fingerprint, find_near_duplicates


def jpeg_bytes(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variants(seed: int = 1) -> dict[str, bytes]:
    base = photo_like(seed)
    w, h = base.size
    return {
        "original": jpeg_bytes(base),
        "reencoded": jpeg_bytes(base.resize((224, 168), Image.LANCZOS), quality=55),
        "recropped": jpeg_bytes(base.crop((20, 0, w - 10, h - 25))),  # aspect ratio changes
        "closeup": jpeg_bytes(base.crop((100, 70, 230, 170)).resize((320, 246), Image.BICUBIC)),
        "watermarked": jpeg_bytes(_watermark(base)),
        "other": jpeg_bytes(photo_like(seed + 100)),
        "another": jpeg_bytes(photo_like(seed + 200)),
    }


def _watermark(im: Image.Image) -> Image.Image:
    out = im.copy()
    out.paste((200, 200, 200), (150, 170, 300, 195))
    return out


def fingerprints(data: dict[str, bytes]):
    names = list(data)
    return names, [compute_fingerprint(load_image(data[n], target_size=192)) for n in names]


def test_near_duplicates_found_for_reencode_recrop_closeup_watermark():
    names, fps = fingerprints(variants())
    pairs = {(names[p.a], names[p.b]) for p in find_near_duplicates(fps)}
    copies = ["original", "reencoded", "recropped", "closeup", "watermarked"]
    for a in copies:
        for b in copies:
            if names.index(a) < names.index(b):
                assert (a, b) in pairs, f"{a} ~ {b} not found"
    assert not any("other" in p or "another" in p for pair in pairs for p in pair)


def test_near_duplicate_evidence_is_reported():
    names, fps = fingerprints(variants(seed=7))
    found = {(names[p.a], names[p.b]): p for p in find_near_duplicates(fps)}
    closeup = found[("original", "closeup")]
    assert closeup.method == "local-features" and closeup.ncc >= 0.8
    assert 2.0 < closeup.scale < 3.0  # the close-up is ~2.5x zoomed
    assert found[("original", "reencoded")].phash_distance <= 4


def test_unrelated_photos_are_not_near_duplicates():
    data = {f"p{i}": jpeg_bytes(photo_like(50 + i)) for i in range(12)}
    _, fps = fingerprints(data)
    assert find_near_duplicates(fps) == []


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_audit_groups_exact_and_near_duplicates(tmp_path):
    make_image_folder(tmp_path, {"cats": 6, "dogs": 6})
    v = variants(seed=3)
    write(tmp_path / "cats" / "orig.jpg", v["original"])
    write(tmp_path / "cats" / "copy.jpg", v["original"])  # same bytes
    write(tmp_path / "cats" / "crop.jpg", v["closeup"])
    shutil.copy(tmp_path / "dogs" / "dogs_000.jpg", tmp_path / "dogs" / "dogs_dup.jpg")
    report = audit_dataset(tmp_path)
    assert report.exact_duplicate_groups == [["cats/copy.jpg", "cats/orig.jpg"],
                                             ["dogs/dogs_000.jpg", "dogs/dogs_dup.jpg"]]
    assert report.near_duplicate_groups == [["cats/copy.jpg", "cats/crop.jpg", "cats/orig.jpg"]]
    assert len(report.near_duplicate_pairs) == 1  # copy.jpg is the same content as orig.jpg
    assert report.groups == [["cats/copy.jpg", "cats/crop.jpg", "cats/orig.jpg"],
                             ["dogs/dogs_000.jpg", "dogs/dogs_dup.jpg"]]
    assert report.label_conflicts == []
    assert report.usable


def test_label_conflicts_are_duplicates_across_classes(tmp_path):
    make_image_folder(tmp_path, {"cats": 4, "dogs": 4})
    v = variants(seed=4)
    write(tmp_path / "cats" / "x.jpg", v["original"])
    write(tmp_path / "dogs" / "x_small.jpg", v["reencoded"])
    write(tmp_path / "dogs" / "y.jpg", (tmp_path / "cats" / "cats_001.jpg").read_bytes())
    report = audit_dataset(tmp_path)
    conflicts = {tuple(c["paths"]): c["classes"] for c in report.label_conflicts}
    assert conflicts == {("cats/cats_001.jpg", "dogs/y.jpg"): ["cats", "dogs"],
                         ("cats/x.jpg", "dogs/x_small.jpg"): ["cats", "dogs"]}
    assert report.usable and any("label conflicts" in w for w in report.warnings)


def test_json_has_the_documented_keys(tmp_path):
    make_image_folder(tmp_path, {"a": 3, "b": 5})
    (tmp_path / "a" / "bad.jpg").write_text("nope")
    out = audit_dataset(tmp_path).to_json()
    for key in ("images", "classes", "unreadable", "exact_duplicate_groups", "near_duplicate_groups",
                "label_conflicts", "near_duplicate_method", "imbalance_ratio", "formats", "sizes",
                "extension_mismatches", "usable", "errors", "warnings", "files"):
        assert key in out
    assert out["images"] == 8 and out["files"] == 9
    assert out["classes"] == {"a": 3, "b": 5}
    assert out["unreadable"] == [{"path": "a/bad.jpg", "reason": "not an image: the file holds text"}]
    assert out["imbalance_ratio"] == pytest.approx(5 / 3, abs=1e-3)
    assert out["near_duplicate_method"]["min_ncc"] == 0.8
    json.dumps(out)  # serialisable


def test_table_mentions_every_finding(tmp_path):
    make_image_folder(tmp_path, {"a": 3, "b": 3})
    png = io.BytesIO()
    photo_like(9, (40, 30)).save(png, "PNG")
    (tmp_path / "a" / "liar.jpg").write_bytes(png.getvalue())
    (tmp_path / "b" / "empty.jpg").write_bytes(b"")
    text = audit_dataset(tmp_path).render()
    assert "a/liar.jpg: named JPEG, is PNG" in text
    assert "b/empty.jpg: empty file" in text
    assert "Verdict: usable" in text


@pytest.mark.parametrize("classes,message", [
    ({}, "no class folders"),
    ({"only": 5}, "only one class"),
    ({"a": 5, "b": 1}, "class 'b' has 1 readable image"),
])
def test_unusable_data_is_explained(tmp_path, classes, message):
    make_image_folder(tmp_path, classes)
    report = audit_dataset(tmp_path)
    assert not report.usable
    assert any(message in e for e in report.errors)
    assert "NOT usable" in report.render()


def test_a_class_of_only_broken_files_is_unusable(tmp_path):
    make_image_folder(tmp_path, {"a": 3})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jpg").write_bytes(b"")
    report = audit_dataset(tmp_path)
    assert report.classes == {"a": 3, "b": 0}
    assert any("class 'b' has 0 readable images" in e for e in report.errors)


def test_synthetic_folders_have_no_duplicates(tmp_path):
    # Other tests train on make_image_folder output: it must not hide duplicates.
    report = audit_dataset(make_image_folder(tmp_path, {"a": 15, "b": 15, "c": 15}))
    assert report.groups == [] and report.usable
