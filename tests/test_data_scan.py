"""scan_dataset: classes, hidden files, stray files, unreadable files with reasons, true formats."""
from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from conftest import make_image_folder, photo_like
from image_classifier.data.scan import list_dataset, scan_dataset
from image_classifier.errors import DatasetError


def test_classes_are_folder_names_verbatim_and_sorted(tmp_path):
    make_image_folder(tmp_path, {"ronaldo": 2, "Kobe Bryant": 2, "Maria Sharapova": 3})
    scan = scan_dataset(tmp_path)
    assert scan.classes == ["Kobe Bryant", "Maria Sharapova", "ronaldo"]  # code-point order
    assert scan.class_counts() == {"Kobe Bryant": 2, "Maria Sharapova": 3, "ronaldo": 2}
    labels = {r.class_name: r.label for r in scan.records}
    assert labels == {"Kobe Bryant": 0, "Maria Sharapova": 1, "ronaldo": 2}
    assert [r.rel_path for r in scan.records] == sorted(r.rel_path for r in scan.records)
    assert scan.records[0].rel_path == "Kobe Bryant/Kobe Bryant_000.jpg"


def test_records_carry_hash_format_and_size(tmp_path):
    make_image_folder(tmp_path, {"a": 1, "b": 1}, size=(40, 24))
    rec = scan_dataset(tmp_path).records[0]
    assert rec.sha256 == hashlib.sha256(rec.path.read_bytes()).hexdigest()
    assert (rec.format, rec.width, rec.height) == ("JPEG", 40, 24)
    assert rec.size_bytes == rec.path.stat().st_size and rec.extension_claims is None


def test_hidden_and_clutter_ignored_stray_reported(tmp_path):
    make_image_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / ".hidden_class").mkdir()
    photo_like(0, (32, 32)).save(tmp_path / ".hidden_class" / "x.jpg")
    photo_like(1, (32, 32)).save(tmp_path / "a" / ".DS_Store", "PNG")
    (tmp_path / "a" / "Thumbs.db").write_bytes(b"\0" * 10)
    (tmp_path / "__MACOSX").mkdir()
    photo_like(2, (32, 32)).save(tmp_path / "loose.jpg")
    scan = scan_dataset(tmp_path)
    assert scan.classes == ["a", "b"]
    assert scan.stray_files == ["loose.jpg"]
    assert scan.files == 4 and not scan.unreadable


def test_nested_folders_belong_to_their_class(tmp_path):
    make_image_folder(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "a" / "more").mkdir()
    photo_like(3, (32, 32)).save(tmp_path / "a" / "more" / "deep.png")
    scan = scan_dataset(tmp_path)
    deep = [r for r in scan.records if r.rel_path == "a/more/deep.png"]
    assert deep and deep[0].class_name == "a" and deep[0].format == "PNG"


def test_broken_files_are_skipped_with_reasons(tmp_path):
    make_image_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "zero.jpg").write_bytes(b"")
    (tmp_path / "a" / "notes.jpg").write_text("hello")
    buf = io.BytesIO()
    photo_like(4).save(buf, "JPEG")
    (tmp_path / "b" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    png = io.BytesIO()
    photo_like(5, (50, 40)).save(png, "PNG")
    (tmp_path / "b" / "really_png.jpg").write_bytes(png.getvalue())
    (tmp_path / "b" / "readme").write_text("a file without extension is judged by content too")
    scan = scan_dataset(tmp_path)
    reasons = {u.rel_path: u.reason for u in scan.unreadable}
    assert set(reasons) == {"a/zero.jpg", "a/notes.jpg", "b/cut.jpg", "b/readme"}
    assert "empty" in reasons["a/zero.jpg"]
    assert "text" in reasons["a/notes.jpg"]
    assert "truncated" in reasons["b/cut.jpg"]
    liar = next(r for r in scan.records if r.rel_path == "b/really_png.jpg")
    assert liar.format == "PNG" and liar.extension_claims == "JPEG" and liar.width == 50
    assert scan.class_counts() == {"a": 2, "b": 3}


def test_exif_rotated_size_is_the_displayed_size(tmp_path):
    make_image_folder(tmp_path, {"a": 1, "b": 1})
    exif = Image.Exif()
    exif[0x0112] = 6
    photo_like(6, (60, 30)).save(tmp_path / "a" / "rot.jpg", exif=exif)
    rec = next(r for r in scan_dataset(tmp_path).records if r.rel_path == "a/rot.jpg")
    assert (rec.width, rec.height) == (30, 60)


def test_fingerprints_only_when_asked(tmp_path):
    make_image_folder(tmp_path, {"a": 1, "b": 1})
    assert scan_dataset(tmp_path).records[0].fingerprint is None
    assert scan_dataset(tmp_path, fingerprints=True).records[0].fingerprint is not None


def test_root_must_be_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "missing")
    f = tmp_path / "file.jpg"
    f.write_bytes(b"x")
    with pytest.raises(DatasetError, match="is a file"):
        list_dataset(f)
