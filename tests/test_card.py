"""The model card (image_classifier.card.ModelCard) and metrics.json (results.Study) read and written
again by the generic dataclass <-> JSON helper: the same bytes as the files a real run wrote."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import compare_child
import image_classifier
from conftest import make_image_folder
from image_classifier.card import Calibration, ModelCard, read_card, write_card
from image_classifier.errors import ModelFormatError
from image_classifier.report.tables import write_metrics_json
from image_classifier.results import Study
from image_classifier.runs import CARD_NAME, METRICS_NAME

TINY, TWO_PHASE = compare_child.TINY, compare_child.TWO_PHASE


pytestmark = pytest.mark.usefixtures("compare_archs")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("card")
    data = make_image_folder(root / "data", {"red": 10, "blue": 10, "green": 10})
    study = image_classifier.compare(data, out=root / "run", models=[TINY, TWO_PHASE], seed=1, val=0.3, test=0.3,
                                     speed_repeats=1, export=False, faces=False, progress=False, cache=False)
    return study.run_dir


@pytest.mark.slow
def test_metrics_json_read_and_written_again_is_the_same_file(run, tmp_path):
    write_metrics_json(Study.load(run), tmp_path / METRICS_NAME)
    assert (tmp_path / METRICS_NAME).read_bytes() == (run / METRICS_NAME).read_bytes()


@pytest.mark.slow
def test_every_model_card_read_and_written_again_is_the_same_file(run, tmp_path):
    cards = sorted(run.glob(f"models/*/{CARD_NAME}"))
    assert len(cards) >= 2
    for path in cards:
        card = read_card(path.parent)
        assert card.architecture == path.parent.name or card.architecture == "ensemble"
        assert isinstance(card.calibration, Calibration) and card.calibration.fitted_on == "validation"
        write_card(tmp_path, card)
        assert (tmp_path / CARD_NAME).read_bytes() == path.read_bytes(), path


@pytest.mark.slow
def test_keys_keep_their_order_a_new_or_removed_and_set_again_key_goes_last(run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(run / "models" / TINY, model)
    before = list(json.loads((model / CARD_NAME).read_text()))
    card = read_card(model)
    card.classes = list(card.classes)  # set again: stays where it was
    card.remove("calibration")
    card.calibration = Calibration(temperature=2.0)  # removed and set again: last, as in a dict
    card.exports = {"onnx": {"file": "model.onnx"}}  # new: last
    write_card(model, card)
    after = list(json.loads((model / CARD_NAME).read_text()))
    assert after == [k for k in before if k != "calibration"] + ["calibration", "exports"]
    assert read_card(model).calibration.temperature == 2.0


def _card(**extra) -> dict:
    return {"format_version": 1, "architecture": TINY, "classes": ["a", "b"], "preprocessing": {"input_size": 32},
            **extra}


def test_an_unknown_key_is_refused_saying_what_to_do(tmp_path):
    (tmp_path / CARD_NAME).write_text(json.dumps(_card(colour_space="lab")))
    with pytest.raises(ModelFormatError, match=r"'colour_space'.*does not know.*train the model again"):
        read_card(tmp_path)


def test_a_missing_key_is_refused_saying_what_to_do(tmp_path):
    data = _card()
    del data["classes"]
    (tmp_path / CARD_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match=r"lacks 'classes'.*image-classifier train"):
        read_card(tmp_path)


def test_a_card_made_in_memory_writes_the_keys_it_has(tmp_path):
    card = ModelCard(architecture=TINY, classes=["a", "b"], preprocessing={"input_size": 32})
    write_card(tmp_path, card)
    assert json.loads((tmp_path / CARD_NAME).read_text()) == _card()
    assert read_card(tmp_path) == card


def test_a_face_cards_strangers_are_read_under_the_old_key_too():
    method = "leave-one-person-out on validation: each photo against the bank without its own person"
    old = ModelCard(architecture="face_embedding", classes=["a", "b"], preprocessing={"input_size": 32},
                    faces={"validation_strangers": {"method": method, "distances": [0.61, 0.7]}})
    assert old.face_strangers == {"method": method, "distances": [0.61, 0.7]}
    # add joins the new person's photos under the key the card has
    assert old.faces_with_added(3, [0, 1, 2], "note", [0.65])["validation_strangers"]["distances"] == [0.61, 0.65, 0.7]
    new = ModelCard(architecture="face_embedding", classes=["a", "b"], preprocessing={"input_size": 32},
                    faces={"strangers": {"method": "every photo", "distances": [0.5]}})
    assert new.face_strangers["method"] == "every photo"
    assert "validation_strangers" not in new.faces_with_added(3, [0, 1, 2], "note", [0.4])
    assert ModelCard(architecture="x", classes=["a"], preprocessing={}).face_strangers is None
