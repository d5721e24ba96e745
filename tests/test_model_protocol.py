"""The Model protocol: three kinds (whole-image CNN, face model, ensemble), each opened from its
saved card as its own class, and callers (evaluate, speed, explain, trust) that work on every kind
through the protocol without asking which it is; a new kind is one class and one entry in KINDS.

Real (small, untrained) networks saved as model directories, a real athlete's photo for the face
model (its bank holds that face, so the face decides) and a real JPEG without a face.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

import image_classifier as ic
from conftest import ATHLETES
from export_helpers import CLASSES, make_model_dir, photo
from image_classifier.evaluate.evaluation import LabelledImage, evaluate_classifier
from image_classifier.evaluate.speed import SpeedConfig, count_parameters, measure_classifier
from image_classifier.faces import analyse_bytes, weights_sha256
from image_classifier.inference import kinds
from image_classifier.inference.classifier import Classifier
from image_classifier.inference.ensemble import EnsembleClassifier, write_ensemble
from image_classifier.inference.explain import FACE, GRAD_CAM, explain
from image_classifier.inference.face_model import FaceClassifier
from image_classifier.inference.kinds import open_classifier
from image_classifier.inference.model import Model
from image_classifier.inference.rejection import FACE_DISTANCE, MAX_PROBABILITY, RejectionRule
from image_classifier.models.face_embedding import FaceHead, FaceInput
from image_classifier.models.registry import build_model, get_arch
from image_classifier.runs import CARD_NAME
from image_classifier.card import Calibration, ModelCard, read_card
from image_classifier.saved_model import save_model
from image_classifier.trust.rejection import rejection_entry

pytestmark = pytest.mark.slow  # real photos through dlib, a MobileNetV2 face model

KOBE = ATHLETES / "Kobe Bryant" / "kobe_(103).jpg"  # one frontal face
WEIGHTS = {"cnn": 0.25, "face": 0.75}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    if not KOBE.is_file():
        pytest.skip(f"needs {KOBE}")
    root = tmp_path_factory.mktemp("kinds")
    cnn = make_model_dir(root, "alexnet_like", input_size=48)
    net, options = build_model("face_embedding", len(CLASSES), options={"face_bank_size": 1})
    descriptor = analyse_bytes(KOBE.read_bytes(), str(KOBE)).descriptors[0].astype(np.float64)
    FaceHead(np.array([np.ones(128), np.zeros(128), -np.ones(128)]), np.array([2.0, 0.0, 0.0]), np.zeros(128),
             np.ones(128), descriptor[None], 0.6).write_to(net)
    prep = get_arch("face_embedding").preprocessing
    card = {"architecture": "face_embedding", "arch_options": options, "classes": list(CLASSES),
            "preprocessing": {**prep.to_dict(), "input_size": 64}, "faces": {"weights_sha256": weights_sha256()}}
    face = save_model(net, card, root / "face")
    ens = write_ensemble(root / "ensemble", {"cnn": cnn, "face": face}, WEIGHTS)
    no_face = root / "red.jpg"
    photo(np.random.default_rng(0), 0).save(no_face, quality=90)
    return {"cnn": cnn, "face": face, "ensemble": ens, "images": [KOBE, no_face], "root": root}


@pytest.fixture(scope="module")
def models(saved) -> dict[str, Model]:
    return {"cnn": open_classifier(saved["cnn"]), "face": open_classifier(saved["face"]),
            "ensemble": ic.load_model(saved["ensemble"], backend="torch", device="cpu")}


def _items(saved: dict) -> list[LabelledImage]:
    return [LabelledImage(p, p.name, CLASSES[0]) for p in saved["images"]]


def test_each_saved_card_opens_as_its_own_kind_of_model(models):
    assert type(models["cnn"]) is Classifier
    assert type(models["face"]) is FaceClassifier
    assert type(models["ensemble"]) is EnsembleClassifier
    assert all(isinstance(m, Model) for m in models.values())
    assert not FaceClassifier.opens(read_card(models["cnn"].model_dir))


def test_evaluate_scores_every_kind_and_the_ensemble_is_its_members_weighted_mean(models, saved):
    ev = {name: evaluate_classifier(m, _items(saved)) for name, m in models.items()}
    for e in ev.values():
        assert len(e.predictions) == 2
        np.testing.assert_allclose(e.probs.sum(axis=1), 1.0, atol=1e-5)
    face_details = [p.details for p in ev["face"].predictions]
    assert face_details[0]["face"] is not None and face_details[1]["face"] is None  # the fallback answered
    mixed = WEIGHTS["cnn"] * ev["cnn"].probs + WEIGHTS["face"] * ev["face"].probs
    np.testing.assert_allclose(ev["ensemble"].probs, mixed, atol=1e-5)


def test_speed_counts_the_networks_each_kind_computes_with(models):
    config = SpeedConfig(warmup=0, repeats=1, min_repeats=1, throughput_repeats=1, throughput_batch=2)
    out = {name: measure_classifier(m, config=config) for name, m in models.items()}
    own = {name: count_parameters(models[name].module)[0] for name in ("cnn", "face")}
    assert out["cnn"]["params"] == own["cnn"] and out["face"]["params"] == own["face"]
    assert out["ensemble"]["params"] == own["cnn"] + own["face"]
    assert out["ensemble"]["flops_per_image"] == out["cnn"]["flops_per_image"] + out["face"]["flops_per_image"]
    assert (out["cnn"]["input_shape"], out["face"]["input_shape"], out["ensemble"]["input_shape"]) == (
        [3, 48, 48], [3, 64, 64], None)
    # What the forward pass leaves out is each kind's own fact: dlib's faces come before a face
    # model's, and so before an ensemble's with a face member.
    assert [out[name]["forward_is_whole"] for name in ("cnn", "face", "ensemble")] == [True, False, False]


def test_each_kind_explains_itself(models):
    assert explain(models["cnn"], KOBE).method == GRAD_CAM
    face = explain(models["face"], KOBE)
    assert face.method == FACE and face.target == CLASSES[0]
    assert explain(models["ensemble"], KOBE).method == FACE  # its heaviest member's explanation


def test_temperatures_and_rules_are_each_kinds_own(models, saved):
    card = ModelCard(architecture="any", classes=list(CLASSES), preprocessing={},
                     calibration=Calibration(temperature=2.0, face_temperature=0.5))
    probs, details = {}, {}
    for name, m in models.items():
        probs[name], details[name] = m.predict_details(saved["images"])
    assert list(models["cnn"].temperatures(details["cnn"], 2, card)) == [2.0, 2.0]
    assert list(models["face"].temperatures(details["face"], 2, card)) == [0.5, 2.0]  # the face decided image 0
    assert list(models["ensemble"].temperatures(details["ensemble"], 2, card)) == [1.0, 1.0]
    cnn_rule = RejectionRule.from_card(rejection_entry(models["cnn"], probs["cnn"], details["cnn"], 0.5))
    face_rule = RejectionRule.from_card(rejection_entry(models["face"], probs["face"], details["face"], 0.5))
    assert list(cnn_rule.references) == [MAX_PROBABILITY]
    assert list(face_rule.references) == [FACE_DISTANCE]  # fitted on the images with a face only


def test_shortcut_inputs_are_pictures_for_a_cnn_and_face_inputs_for_the_face_model(models, saved):
    picture = Image.open(saved["images"][1]).convert("RGB")
    assert models["cnn"].shortcut_inputs("greyscale", [picture], [None], lambda k: None) == [picture]
    (face_input,) = models["face"].shortcut_inputs("face_masked", [picture], [None], lambda k: None)
    assert isinstance(face_input, FaceInput) and face_input.face_index is None and face_input.image is picture


class MirroredClassifier(Classifier):
    """A sixth kind, for the test: a CNN that answers the mirror image of every picture."""

    @classmethod
    def opens(cls, card: ModelCard) -> bool:
        return bool((card.args or {}).get("mirrored"))  # what its training run recorded

    def decode(self, source, *, max_pixels=None):
        return ImageOps.mirror(super().decode(source, max_pixels=max_pixels))


def test_a_new_kind_is_one_class_and_one_entry_in_kinds(saved, models, monkeypatch, tmp_path):
    card = json.loads((saved["cnn"] / CARD_NAME).read_text())
    module = models["cnn"].module
    mirrored_dir = save_model(module, {k: v for k, v in card.items() if k != "weights_sha256"} | {"args": {"mirrored": True}},
                              tmp_path / "mirrored")
    monkeypatch.setattr(kinds, "KINDS", (MirroredClassifier, *kinds.KINDS))
    model = open_classifier(mirrored_dir)
    assert type(model) is MirroredClassifier
    ev = evaluate_classifier(model, _items(saved))
    flipped = [ImageOps.mirror(models["cnn"].decode(p)) for p in saved["images"]]
    np.testing.assert_allclose(ev.probs, models["cnn"].predict_proba(flipped), atol=1e-6)


def test_a_face_first_cascade_answers_a_photo_without_a_face_before_one_with_a_face(saved):
    from image_classifier.inference.ensemble import FACE_FIRST

    path = write_ensemble(saved["root"] / "cascade", {"face": saved["face"], "cnn": saved["cnn"]},
                          {"face": 0.5, "cnn": 0.5}, combine=FACE_FIRST)
    cascade = ic.load_model(path, backend="torch", device="cpu")
    no_face, kobe = saved["images"][1], saved["images"][0]
    probs, details = cascade.predict_details([no_face, kobe])
    # The face decides Kobe's photo; the whole-image CNN answers the photo without a face.
    face, cnn = open_classifier(saved["face"]), open_classifier(saved["cnn"])
    np.testing.assert_allclose(probs[1], face.predict_proba([kobe])[0], atol=1e-6)
    np.testing.assert_allclose(probs[0], cnn.predict_proba([no_face])[0], atol=1e-6)
    assert details[1]["members"][0]["face"] is not None and details[0]["members"][0]["face"] is None


def test_finish_refuses_prepared_rows_without_the_forward_output(models, saved):
    for name in ("cnn", "face"):
        prepared = models[name].prepare([saved["images"][1]])  # no face: the network answers it
        assert prepared.rows == [0]
        with pytest.raises(ValueError, match="forward pass"):
            models[name].finish(prepared, None)
