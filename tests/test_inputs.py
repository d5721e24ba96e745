"""``model.predict`` takes what Python users hand it: one path, a list, a folder, PIL images and
numpy arrays (RGB, or BGR from OpenCV with ``bgr=True``), and gives the file's answer for the same
pixels; ``predict_frame`` / ``predict_folder`` give sort's columns. Real trained models, real files."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from train_helpers import train_red_blue

from image_classifier import load_model
from image_classifier.data.decode import load_image
from image_classifier.inference.rows import FACE_COLUMNS, PHOTO_COLUMNS


@pytest.fixture(scope="module")
def red_blue(tiny_arch, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inputs")
    data, model_dir = train_red_blue(root, 8)
    return {"data": data, "model": load_model(model_dir, backend="torch")}


def test_an_array_a_pil_image_and_the_file_get_the_same_answer(red_blue, tmp_path):
    model = red_blue["model"]
    for path in sorted((red_blue["data"] / "red").iterdir())[:2] + sorted((red_blue["data"] / "blue").iterdir())[:2]:
        png = tmp_path / f"{path.stem}.png"
        load_image(path).save(png)  # lossless: the file and the arrays hold the same pixels
        picture = load_image(png)
        rgb = np.asarray(picture)
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # what cv2.imread gives
        expected = model.predict_proba(png)
        for source, kwargs in ((picture, {}), (rgb, {}), (bgr, {"bgr": True})):
            assert np.array_equal(model.predict_proba(source, **kwargs), expected)
        assert model.predict(bgr, bgr=True) == model.predict(png) == model.predict([png])
        # BGR read as RGB is another picture: a red photo turns blue.
        if path.parent.name == "red":
            assert model.predict(bgr) == ["blue"] and model.predict(png) == ["red"]


def test_a_stack_a_greyscale_frame_and_bad_arrays(red_blue):
    model = red_blue["model"]
    frames = np.stack([np.asarray(load_image(p)) for p in sorted((red_blue["data"] / "red").iterdir())[:3]])
    assert model.predict(frames) == [model.predict(f)[0] for f in frames]  # N x H x W x 3: N pictures
    grey = np.asarray(load_image(next((red_blue["data"] / "red").iterdir())).convert("L"))
    assert len(model.predict(grey)) == 1
    with pytest.raises(TypeError, match="uint8"):
        model.predict(frames.astype(np.float32) / 255)
    with pytest.raises(TypeError, match="H x W x 3"):
        model.predict(np.zeros((4, 4, 2), dtype=np.uint8))


def test_a_folder_is_every_file_under_it_sorted(red_blue, tmp_path):
    model = red_blue["model"]
    nested = tmp_path / "photos"
    shutil.copytree(red_blue["data"], nested / "2024")
    (nested / ".hidden.jpg").write_bytes(b"not looked at")
    files = sorted(p for p in (nested / "2024").rglob("*") if p.is_file())
    assert model.predict(nested) == model.predict(files) == [model.predict(f)[0] for f in files]
    frame = model.predict_folder(nested)
    rows = frame.to_dict("records") if hasattr(frame, "to_dict") else frame
    assert list(frame.columns if hasattr(frame, "columns") else rows[0]) == list(PHOTO_COLUMNS)
    assert [r["path"] for r in rows] == [str(f) for f in files]
    assert [r["label"] for r in rows] == model.predict(files)
    probs = model.predict_proba(files)
    assert np.allclose([r["probability"] for r in rows], probs.max(1), atol=1e-6)
    assert all(len(r["sha256"]) == 64 for r in rows) and {r["model"] for r in rows} == {"model"}
    with pytest.raises(NotADirectoryError):
        model.predict_folder(files[0])
    # A picture in memory has no path and no file hash; a CNN finds no faces.
    one = model.predict_frame(np.asarray(load_image(files[0])))
    one = one.to_dict("records") if hasattr(one, "to_dict") else one
    assert one[0]["path"] is None and one[0]["sha256"] is None and one[0]["label"] == rows[0]["label"]
    faces = model.predict_frame(files, faces=True)
    assert len(faces) == 0 and list(getattr(faces, "columns", FACE_COLUMNS)) == list(FACE_COLUMNS)


@pytest.mark.slow
def test_a_face_model_answers_an_opencv_frame_as_it_answers_the_file(face_model, tmp_path):
    from image_classifier.faces import FaceCache

    model = load_model(face_model["model"], backend="torch", face_cache=FaceCache(face_model["cache"]))
    for path in sorted((face_model["data"] / "Maria Sharapova").iterdir())[:3]:
        png = tmp_path / f"{path.stem}.png"
        load_image(path).save(png)
        rgb = np.asarray(load_image(png))
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        p_file, d_file = model.predict_details(png)
        for source, kwargs in ((rgb, {}), (bgr, {"bgr": True}), (load_image(png), {})):
            p, d = model.predict_details(source, **kwargs)
            assert np.array_equal(p, p_file)
            assert d[0]["face"] == d_file[0]["face"] and d[0]["faces"] == d_file[0]["faces"]
            assert d[0]["unknown"] == d_file[0]["unknown"]
