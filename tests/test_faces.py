"""The face service (image_classifier.faces) on real photos: detection, landmarks, chips,
descriptors, the per-file cache and the per-class survey."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder, synthetic_image
from image_classifier.data.decode import load_image
from image_classifier.data.scan import scan_dataset
from image_classifier.faces import METHODS, FaceCache, analyse_bytes, analyse_image, face_chip, survey_faces
from image_classifier.faces.dlib_weights import WEIGHTS_SHA256, weights_sha256
from image_classifier.fileio import sha256_file

pytestmark = pytest.mark.slow

ONE_FACE = "Kobe Bryant/kobe_(103).jpg"  # a portrait-like press photo: one face
SEVERAL_FACES = "Maria Sharapova/Sharapova_ (102).jpg"  # a group on court
SAME_PERSON = {  # three photos of each athlete with one frontal face
    "Kobe Bryant": ["Kobe Bryant/kobe_(103).jpg", "Kobe Bryant/kobe_(107).jpg", "Kobe Bryant/kobe_(14).jpg"],
    "Maria Sharapova": ["Maria Sharapova/1451661186.jpg", "Maria Sharapova/17-Maria-Sharapova-l.jpg",
                        "Maria Sharapova/0b9528e8f39fd114a09482b25f697703.jpg"],
    "ronaldo": ["ronaldo/15sporonmug1a.jpg", "ronaldo/187520692_9ce0e1e0a5_c.jpg", "ronaldo/1410474841f96af.jpg"],
}


def _box_contains(box, point, margin=0.25):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return x0 - margin * w <= point[0] <= x1 + margin * w and y0 - margin * h <= point[1] <= y1 + margin * h


def test_the_weights_are_the_pinned_ones():
    assert weights_sha256() == WEIGHTS_SHA256


def test_one_face_with_landmarks_and_descriptor(athletes_dir):
    image = load_image(athletes_dir / ONE_FACE)
    a = analyse_image(image)
    assert len(a.faces) == 1
    face = a.face
    assert face.method in METHODS and face.method.startswith("hog")
    assert (a.width, a.height) == image.size
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= a.width and 0 <= y0 < y1 <= a.height
    assert len(face.landmarks) == 5 and all(_box_contains(face.box, p) for p in face.landmarks)
    assert a.descriptor.shape == (128,) and a.descriptor.dtype == np.float32
    assert 0.2 < float(np.linalg.norm(a.descriptor)) < 2.0  # dlib descriptors are roughly unit-scale


def test_several_faces_largest_first(athletes_dir):
    a = analyse_image(load_image(athletes_dir / SEVERAL_FACES))
    assert len(a.faces) >= 2
    areas = [f.area for f in a.faces]
    assert areas == sorted(areas, reverse=True)


@pytest.mark.parametrize("size", [(32, 32), (96, 96), (400, 300)])
def test_no_face_in_synthetic_images(size):
    rng = np.random.default_rng(1)
    for k in range(3):
        a = analyse_image(synthetic_image(k, rng, size))
        assert a.faces == [] and a.face is None and a.descriptor is None and a.method is None


def test_tight_face_crop_is_found_and_is_the_same_face(athletes_dir):
    image = load_image(athletes_dir / ONE_FACE)
    full = analyse_image(image)
    x0, y0, x1, y1 = full.face.box
    crop = image.crop((round(x0), round(y0), round(x1), round(y1))).resize((112, 112), Image.BILINEAR)
    a = analyse_image(crop)
    assert a.face is not None, "a tight 112x112 face crop must still be found"
    assert a.face.method == full.face.method  # by the same detector step as in the whole photo
    # The same face: dlib's same-person threshold is a distance of 0.6.
    assert float(np.linalg.norm(a.descriptor - full.descriptor)) < 0.6


def test_exif_rotation_is_honoured(athletes_dir, tmp_path):
    """A photo stored sideways with an EXIF Orientation tag: the face is found, in upright pixels."""
    upright = load_image(athletes_dir / ONE_FACE)
    expected = analyse_image(upright).face.box
    # Stored rotated 90 degrees counter-clockwise; Orientation 6 tells readers to turn it 90 clockwise.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    a = analyse_bytes(buf.getvalue())
    assert (a.width, a.height) == upright.size
    assert a.face is not None
    assert np.allclose(a.face.box, expected, atol=0.08 * upright.width)
    # Without honouring the tag the frontal detector looks at a sideways face, and finds none.
    assert analyse_image(stored).face is None


def test_alignment_gives_a_150px_chip(athletes_dir):
    image = load_image(athletes_dir / ONE_FACE)
    chip = face_chip(image, analyse_image(image).face)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8 and chip.std() > 10


def test_same_person_is_nearer_than_other_people(athletes_dir):
    desc = {c: [analyse_image(load_image(athletes_dir / p)).descriptor for p in paths]
            for c, paths in SAME_PERSON.items()}
    for c, ds in desc.items():
        assert all(d is not None for d in ds), c
        for i, d in enumerate(ds):
            same = [float(np.linalg.norm(d - e)) for j, e in enumerate(ds) if j != i]
            other = [float(np.linalg.norm(d - e)) for oc, es in desc.items() if oc != c for e in es]
            # Every photo's nearest other photo shows the same person.
            assert min(same) < min(other), (c, i, same, other)


def test_cache_computes_a_file_once_and_survives_a_new_process(athletes_dir, tmp_path):
    files = [(athletes_dir / p, sha256_file(athletes_dir / p)) for p in (ONE_FACE, SEVERAL_FACES)]
    first = FaceCache(tmp_path / "cache")
    found, failures = first.analyse_files(files)
    assert failures == {} and first.stats["analysed"] == 2
    again, _ = first.analyse_files(files)
    assert first.stats["analysed"] == 2 and first.stats["memory_hits"] == 2
    fresh = FaceCache(tmp_path / "cache")  # what another process sees
    loaded, _ = fresh.analyse_files(files)
    assert fresh.stats == {"memory_hits": 0, "disk_hits": 2, "analysed": 0}
    for sha, a in found.items():
        assert loaded[sha].faces == a.faces
        assert np.array_equal(loaded[sha].descriptor, a.descriptor)
    # A damaged entry is a miss, not an error.
    entry = next((tmp_path / "cache").rglob("*.json"))
    entry.write_text("{not json")
    third = FaceCache(tmp_path / "cache")
    third.analyse_files(files)
    assert third.stats["analysed"] == 1 and third.stats["disk_hits"] == 1


def test_unreadable_files_are_reported_not_raised(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    found, failures = FaceCache().analyse_files([(bad, "0" * 64)])
    assert found == {} and "truncated image header" in failures[str(bad)]


def test_survey_counts_per_class(athletes_dir, tmp_path):
    data = tmp_path / "people"
    picks = {"kobe": [ONE_FACE], "maria": [SEVERAL_FACES]}
    for cls, paths in picks.items():
        (data / cls).mkdir(parents=True)
        for p in paths:
            (data / cls / Path(p).name).write_bytes((athletes_dir / p).read_bytes())
    rng = np.random.default_rng(0)
    synthetic_image(0, rng, (200, 150)).save(data / "kobe" / "texture.png")
    survey = survey_faces(scan_dataset(data).records)
    assert survey.per_class == {"kobe": {"none": 1, "one": 1, "several": 0},
                                "maria": {"none": 0, "one": 0, "several": 1}}
    assert survey.with_face == 2 and survey.images == 3
    assert survey.detection_rate == pytest.approx(2 / 3) and not survey.is_face_folder
    assert survey.has_face("kobe/texture.png") is False and survey.has_face(f"kobe/{Path(ONE_FACE).name}") is True
    assert sum(survey.methods.values()) == 2
    assert "kobe" in survey.render() and json.dumps(survey.to_json())


def test_check_reports_faces_per_class(athletes_dir, tmp_path):
    data = tmp_path / "people"
    for cls, paths in {"kobe": SAME_PERSON["Kobe Bryant"], "maria": SAME_PERSON["Maria Sharapova"]}.items():
        (data / cls).mkdir(parents=True)
        for p in paths:
            (data / cls / Path(p).name).write_bytes((athletes_dir / p).read_bytes())
    env = {"IMAGE_CLASSIFIER_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "image_classifier.cli", "check", str(data), "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    faces = json.loads(out.stdout)["faces"]
    assert faces["per_class"] == {"kobe": {"none": 0, "one": 3, "several": 0},
                                  "maria": {"none": 0, "one": 3, "several": 0}}
    assert faces["detection_rate"] == 1.0
    assert list((tmp_path / "cache").glob("faces-v*/*/*.json")), "the answers are cached for compare and serve"
    skipped = subprocess.run([sys.executable, "-m", "image_classifier.cli", "check", str(data), "--json",
                              "--no-faces"], capture_output=True, text=True, env=env, timeout=300)
    assert skipped.returncode == 0 and json.loads(skipped.stdout)["faces"] is None


def test_missing_weights_package_is_a_clear_error(image_folder, tmp_path):
    """Without face_recognition_models, check still works and says which package to install."""
    code = ("import sys; sys.modules['face_recognition_models'] = None\n"
            "from image_classifier.cli import main\n"
            f"sys.exit(main(['check', {str(image_folder)!r}, '--json']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"IMAGE_CLASSIFIER_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["faces"] is None
    assert "face_recognition_models" in out.stderr and "pip install" in out.stderr


def test_small_folder_without_faces(tmp_path):
    data = make_image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(48, 48))
    survey = survey_faces(scan_dataset(data).records)
    assert survey.with_face == 0 and survey.detection_rate == 0.0 and not survey.is_face_folder
