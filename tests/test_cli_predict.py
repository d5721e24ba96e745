"""``image-classifier predict --json`` with unreadable files: each one's ``error`` for people and
``kind`` for programs (the data layer's kind, the same as the web API's error kinds)."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from serve_fixtures import COLOURS, colour_image, encode

from image_classifier.cli import main


@pytest.fixture(scope="module")
def model_dir(colour_model):
    return colour_model


def test_predict_json_reports_the_kind_of_every_unreadable_file(model_dir, tmp_path, capsys):
    photo = encode(colour_image(COLOURS["green"], seed=4))
    files = {
        "good.jpg": photo,
        "notes.jpg": b"not a photo, just notes\n",
        "cut.jpg": photo[:len(photo) // 2],
        "empty.jpg": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 MP in a few KB
    paths = [tmp_path / name for name in files] + [tmp_path / "bomb.png", tmp_path / "missing.jpg"]

    code = main(["predict", str(model_dir), *map(str, paths), "--json"])
    out = capsys.readouterr().out
    assert code == 1  # some files could not be read
    by_name = {p["image"]: p for p in json.loads(out)["predictions"]}
    kinds = {name: by_name[str(tmp_path / name)].get("kind") for name in
             ["good.jpg", "notes.jpg", "cut.jpg", "empty.jpg", "bomb.png", "missing.jpg"]}
    assert kinds == {"good.jpg": None, "notes.jpg": "unsupported", "cut.jpg": "corrupt", "empty.jpg": "empty",
                     "bomb.png": "too_large", "missing.jpg": "io"}
    assert by_name[str(tmp_path / "good.jpg")]["top"][0]["label"] == "green"
    for prediction in by_name.values():
        if "error" in prediction:
            assert prediction["error"] and set(prediction) == {"image", "error", "kind"}
    # A folder stands for every file under it, sorted by path, each answered like the same file given alone.
    code = main(["predict", str(model_dir), str(tmp_path), "--json"])
    folder = json.loads(capsys.readouterr().out)["predictions"]
    assert code == 1 and [p["image"] for p in folder] == sorted(str(p) for p in tmp_path.iterdir())
    assert all(p == by_name[p["image"]] for p in folder)
