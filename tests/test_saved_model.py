"""Saved models: round trip, fresh-process reload, corruption detected, atomic writes; predict
gives labels and predict_proba probabilities."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_classifier import load_model
from image_classifier.errors import ModelFormatError
from image_classifier.models import build_model, get_arch
from image_classifier.runs import CARD_NAME, WEIGHTS_NAME
from image_classifier.saved_model import save_model


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (90 + 7 * i, 120, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net, options = build_model("mobilenet_v2", 3)
    card = {
        "architecture": "mobilenet_v2",
        "arch_options": options,
        "classes": ["Kobe Bryant", "<script>alert(1)</script>", "ronaldo"],
        "preprocessing": get_arch("mobilenet_v2").preprocessing.to_dict(),
    }
    return save_model(net, card, tmp_path / "model")


def test_round_trip_keeps_classes_and_preprocessing(saved: Path):
    model = load_model(saved)
    assert model.classes == ["Kobe Bryant", "<script>alert(1)</script>", "ronaldo"]
    assert model.preprocessing.input_size == 224
    assert model.arch == "mobilenet_v2"
    probs = model.predict_proba(_images(3))
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert all(p.stat().st_mode & 0o044 for p in saved.iterdir()), "files readable by others, like any file"


@pytest.mark.slow
def test_reload_in_a_fresh_process_predicts_the_same(saved: Path, tmp_path: Path):
    images = _images(2, seed=3)
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"img{i}.png")
        img.save(paths[-1])
    here = load_model(saved).predict_proba(paths)
    code = (
        "import sys, json, image_classifier as ic;"
        "m = ic.load_model(sys.argv[1]);"
        "print(json.dumps(m.predict_proba(sys.argv[2:]).tolist()))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(saved), *map(str, paths)],
                         capture_output=True, text=True, check=True)
    np.testing.assert_allclose(np.array(json.loads(out.stdout)), here, atol=1e-6)


def test_changed_weights_are_detected(saved: Path):
    blob = bytearray((saved / WEIGHTS_NAME).read_bytes())
    blob[-10] ^= 0xFF
    (saved / WEIGHTS_NAME).write_bytes(bytes(blob))
    with pytest.raises(ModelFormatError, match="does not match its card"):
        load_model(saved)


def test_missing_or_foreign_card_is_a_clear_error(saved: Path, tmp_path: Path):
    with pytest.raises(ModelFormatError, match="not a saved model"):
        load_model(tmp_path)
    (saved / CARD_NAME).write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        load_model(saved)
    (saved / CARD_NAME).write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelFormatError, match="lacks 'architecture'"):
        load_model(saved)


def test_card_for_an_unknown_architecture_is_a_clear_error(saved: Path):
    card = json.loads((saved / CARD_NAME).read_text())
    card["architecture"] = "no_such_net"
    (saved / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="unknown architecture 'no_such_net'"):
        load_model(saved)


def test_weights_of_another_architecture_are_refused(saved: Path):
    card = json.loads((saved / CARD_NAME).read_text())
    card["architecture"] = "alexnet_like"
    (saved / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="does not fit architecture alexnet_like"):
        load_model(saved)


def test_no_temporary_files_are_left_behind(saved: Path):
    assert sorted(p.name for p in saved.iterdir()) == [CARD_NAME, WEIGHTS_NAME]


def test_predict_takes_one_image_or_a_list_and_names_what_it_accepts(saved: Path):
    model = load_model(saved)
    image = _images(1)[0]
    assert model.predict(image) == model.predict([image]) and len(model.predict(image)) == 1
    assert np.array_equal(model.predict_proba(image), model.predict_proba([image]))
    with pytest.raises(TypeError, match="a path, a folder, bytes, .* numpy array"):
        model.predict(42)
    with pytest.raises(TypeError, match="uint8"):
        model.predict(np.zeros((8, 8, 3), dtype=np.float32))


def test_predict_gives_labels_and_predict_proba_probabilities(saved: Path):
    """The scikit-learn convention: ``predict`` -> one class name per image, ``predict_proba`` ->
    a row of probabilities per image, in ``classes`` order."""
    model = load_model(saved)
    images = _images(6, seed=1)
    probs = model.predict_proba(images, batch_size=4)  # batches of 4 and 2
    labels = model.predict(images, batch_size=4)
    assert isinstance(labels, list) and len(labels) == 6 and all(isinstance(x, str) for x in labels)
    assert labels == [model.classes[i] for i in probs.argmax(axis=1)]
    assert model.predict([]) == [] and model.predict_proba([]).shape == (0, 3)


def test_predict_labels_is_a_deprecated_alias_of_predict(saved: Path):
    model = load_model(saved)
    images = _images(3, seed=2)
    with pytest.warns(DeprecationWarning, match="predict_labels is deprecated.*use predict") as caught:
        old = model.predict_labels(images)
    assert caught[0].filename == __file__  # the warning names the caller's line, not the library's
    assert old == model.predict(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names warn about nothing
        model.predict(images)
        model.predict_proba(images)


def test_a_face_model_whose_face_weights_changed_is_one_a_resumed_compare_retrains():
    from image_classifier.card import ModelCard
    from image_classifier.faces import weights_sha256
    from image_classifier.inference.face_model import changed_face_weights
    from image_classifier.study.resume import _face_differences

    installed = weights_sha256()
    name = sorted(installed)[0]

    def card(faces: dict | None) -> ModelCard:
        return ModelCard(architecture="face_embedding", classes=["a", "b"], preprocessing={"input_size": 224},
                         faces=faces)

    assert changed_face_weights(card({"weights_sha256": dict(installed)})) == []
    assert _face_differences(card({"weights_sha256": dict(installed)})) == []
    assert changed_face_weights(card(None)) == [] and _face_differences(card(None)) == []
    other = card({"weights_sha256": {**installed, name: "0" * 64}})
    assert changed_face_weights(other) == [name]
    assert _face_differences(other) == ["face weights: other files in the run than installed now"]
