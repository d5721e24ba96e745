"""audit_dataset: duplicates, near-duplicates, label conflicts, usability verdict, JSON and table."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder, photo_like
from image_classifier.data.check import audit_dataset
from image_classifier.data.decode import load_image
from image_classifier.data import near_duplicates
from image_classifier.data.near_duplicates import (NearDuplicateParams, compute_fingerprint,
                                                   find_near_duplicates, phash, search_near_duplicates)


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


def face_crop(path: Path, side: int = 112, box: int = 128) -> Image.Image:
    """An aligned face crop: LFW deep-funneled photos have the face centred, so a centre crop."""
    im = Image.open(path).convert("RGB")
    left, top = (im.width - box) // 2, (im.height - box) // 2
    return im.crop((left, top, left + box, top + box)).resize((side, side), Image.BICUBIC)


def same_layout(a: Image.Image, b: Image.Image, sigma: float = 3.0) -> tuple[Image.Image, Image.Image]:
    """Two faces given one common low-pass base: each keeps its own detail (above ~sigma px), both
    share the low frequencies, which is all a 64-bit DCT hash sees."""
    fa, fb = (np.asarray(x, dtype=np.float32) for x in (a, b))
    base = cv2.GaussianBlur((fa + fb) / 2, (0, 0), sigma)

    def on_base(f: np.ndarray) -> Image.Image:
        detail = f - cv2.GaussianBlur(f, (0, 0), sigma)
        return Image.fromarray(np.clip(base + detail, 0, 255).astype(np.uint8))

    return on_base(fa), on_base(fb)


def colour_shifted(im: Image.Image, shift=(30, -10, -25)) -> Image.Image:
    arr = np.asarray(im, dtype=np.int16) + np.array(shift, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


@pytest.fixture(scope="module")
def people(unknown_people_dir) -> list[Path]:
    return sorted(unknown_people_dir.glob("*.jpg"))


@pytest.mark.parametrize("k", [0, 4, 10])
def test_different_faces_with_the_same_layout_are_not_near_duplicates(people, k):
    a, b = same_layout(face_crop(people[k]), face_crop(people[k + 1]))
    assert hamming(phash(a.convert("L")), phash(b.convert("L"))) <= 4  # a pHash match: a candidate
    names, fps = fingerprints({"a": jpeg_bytes(a), "b": jpeg_bytes(b)})
    assert hamming(fps[0].phash, fps[1].phash) <= 4
    search = search_near_duplicates(fps)
    assert search.pairs == []
    assert search.candidates["phash"].considered == 1 and search.candidates["phash"].rejected == 1


@pytest.mark.parametrize("k", [3, 40, 77])
def test_reencoded_recropped_colour_shifted_face_crops_are_near_duplicates(people, k):
    face = face_crop(people[k])
    w = face.width
    data = {"original": jpeg_bytes(face, 95), "reencoded": jpeg_bytes(face, 40),
            "recropped": jpeg_bytes(face.crop((4, 3, w - 2, w)).resize((w, w), Image.BICUBIC)),
            "colour_shifted": jpeg_bytes(colour_shifted(face)),
            "other_person": jpeg_bytes(face_crop(people[k + 1]))}
    names, fps = fingerprints(data)
    found = {(names[p.a], names[p.b]): p for p in find_near_duplicates(fps)}
    for copy in ("reencoded", "recropped", "colour_shifted"):
        pair = found[("original", copy)]
        assert pair.ncc >= 0.8, (copy, pair)
    assert found[("original", "reencoded")].method == "phash"  # confirmed, and carries its ncc
    assert not any("other_person" in pair for pair in found)


def test_whole_frame_confirmation_corrects_a_slight_recrop(people):
    # A 3 px re-crop can keep the pHash (a candidate) but shifts the detail that band-pass NCC
    # compares; without keypoints the frames are aligned by the bounded ECC correction.
    face = face_crop(people[9])
    w = face.width
    _, (fa, fb) = fingerprints({"a": jpeg_bytes(face, 95),
                                "b": jpeg_bytes(face.crop((3, 3, w, w)).resize((w, w), Image.BICUBIC))})
    assert hamming(fa.phash, fb.phash) <= 4
    params = NearDuplicateParams()
    unaligned = near_duplicates._bandpass_ncc(fa.gray.astype(np.float32), fb.gray.astype(np.float32),
                                              np.eye(2, 3, dtype=np.float32), params.min_overlap_px)
    evidence = near_duplicates._confirm_whole_frame(fa, fb, params)
    assert unaligned < 0.8 <= evidence.ncc


def smooth_images() -> dict[str, Image.Image]:
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float64)
    grey = lambda a: Image.fromarray(np.stack([a.astype(np.uint8)] * 3, -1))  # noqa: E731
    return {"flat": Image.new("RGB", (112, 112), (180, 120, 60)),
            "darker_flat": Image.new("RGB", (112, 112), (120, 60, 20)),
            "gradient": grey(20 + xx + yy),
            "steeper_gradient": grey(20 + 2 * xx)}


def test_textureless_images_and_their_reencodes_are_near_duplicates():
    data = {}
    for name, im in smooth_images().items():
        data[name] = jpeg_bytes(im, 95)
        data[name + "_reencoded"] = jpeg_bytes(im, 40)
    names, fps = fingerprints(data)
    found = {(names[p.a], names[p.b]): p for p in find_near_duplicates(fps)}
    assert set(found) == {(n, n + "_reencoded") for n in smooth_images()}
    for pair in found.values():
        # No texture, so no NCC: confirmed by the blurred images agreeing.
        assert pair.method == "phash" and pair.ncc is None and pair.lowpass_rms < 3.0


def test_small_images_and_their_reencodes_are_near_duplicates():
    # A 32x32 frame is smaller than the overlap that keypoint alignments must cover; taken frame
    # for frame it still counts.
    small = photo_like(5).resize((32, 32), Image.LANCZOS)
    names, fps = fingerprints({"a": jpeg_bytes(small, 95), "b": jpeg_bytes(small, 60),
                               "other": jpeg_bytes(photo_like(6).resize((32, 32), Image.LANCZOS))})
    pairs = find_near_duplicates(fps)
    assert [(names[p.a], names[p.b]) for p in pairs] == [("a", "b")]
    assert pairs[0].ncc >= 0.8


def test_audit_reports_candidates_and_the_weakest_link(tmp_path, people):
    make_image_folder(tmp_path, {"a": 4, "b": 4})
    face = face_crop(people[40])
    w = face.width
    write(tmp_path / "a" / "face.jpg", jpeg_bytes(face, 95))
    write(tmp_path / "a" / "face_q40.jpg", jpeg_bytes(face, 40))
    write(tmp_path / "a" / "face_recrop.jpg",
          jpeg_bytes(face.crop((4, 3, w - 2, w)).resize((w, w), Image.BICUBIC)))
    twin_a, twin_b = same_layout(face_crop(people[0]), face_crop(people[1]))
    write(tmp_path / "a" / "twin.jpg", jpeg_bytes(twin_a))
    write(tmp_path / "b" / "twin.jpg", jpeg_bytes(twin_b))
    report = audit_dataset(tmp_path)
    assert report.near_duplicate_groups == [["a/face.jpg", "a/face_q40.jpg", "a/face_recrop.jpg"]]
    assert report.label_conflicts == []  # the two people with one layout are not a conflict
    phash_counts = report.near_duplicate_candidates["phash"]
    assert phash_counts.rejected >= 1 and phash_counts.accepted >= 1
    weakest = report.near_duplicate_weakest_links
    assert len(weakest) == 1
    assert weakest[0].ncc == min(p.ncc for p in report.near_duplicate_pairs)
    out = report.to_json()
    assert out["near_duplicate_candidates"]["phash"] == {
        "considered": phash_counts.considered, "accepted": phash_counts.accepted,
        "rejected": phash_counts.rejected}
    assert out["near_duplicate_weakest_links"] == [weakest[0].to_json()]
    assert all(p["ncc"] is not None for p in out["near_duplicate_pairs"])
    text = report.render()
    assert f"phash {phash_counts.considered} considered" in text
    assert f"3 files: {weakest[0].a} ~ {weakest[0].b}  (ncc {weakest[0].ncc:.3f})" in text


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


# --- pHash candidates without comparing every pair (issue 15: the audit's cost linear in images) ---
def _all_pairs_within(hashes: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
    """The reference: every pair compared (what the audit did before multi-index hashing)."""
    out = set()
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= max_distance:
                out.add((i, j))
    return out


def _hashes_with_near_pairs(seed: int) -> np.ndarray:
    """Random hashes, copies with 0-8 bits flipped, exact repeats, and a cluster sharing most bits."""
    rng = np.random.default_rng(seed)
    base = [int(v) for v in rng.integers(0, 2**63, 150, dtype=np.int64)]
    hashes = list(base)
    for k, h in enumerate(base[:60]):
        flips = rng.choice(64, size=k % 9, replace=False)
        hashes.append(h ^ sum(1 << int(b) for b in flips))
    hashes += base[:5]  # byte-identical contents
    hashes += [base[0] ^ (1 << int(b)) ^ (1 << int(c)) for b, c in rng.integers(0, 64, (25, 2))]
    return np.array(hashes, dtype=np.uint64)


@pytest.mark.parametrize("max_distance", [0, 1, 4, 8, 20])
def test_phash_pairs_equal_comparing_every_pair(max_distance):
    hashes = _hashes_with_near_pairs(max_distance)
    expected = _all_pairs_within(hashes, max_distance)
    assert len(expected) > 0
    assert near_duplicates.phash_pairs(hashes, max_distance) == expected


def test_audit_proposes_the_same_phash_candidates_as_comparing_every_pair():
    data = variants(seed=3)
    data.update({f"smooth_{k}": jpeg_bytes(im, 40) for k, im in smooth_images().items()})
    data.update({f"smooth_{k}_hi": jpeg_bytes(im, 95) for k, im in smooth_images().items()})
    names, fps = fingerprints(data)
    hashes = np.array([f.phash for f in fps], dtype=np.uint64)
    search = search_near_duplicates(fps)
    expected = _all_pairs_within(hashes, NearDuplicateParams().max_phash_distance)
    assert len(expected) >= 4
    # Every pair the reference proposes is judged and counted under pHash, nothing else is.
    assert search.candidates["phash"].considered == len(expected)
    phash_found = {(p.a, p.b) for p in search.pairs if p.method == "phash"}
    assert phash_found <= expected
    assert {(names[a], names[b]) for a, b in phash_found} >= {
        (f"smooth_{k}", f"smooth_{k}_hi") for k in smooth_images()}
