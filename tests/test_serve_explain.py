"""``/api/predict?explain=1``: the answer says why (a Grad-CAM overlay as a PNG), only when asked.
A real trained model, real images, Flask's test client; every answer is checked against the
server's OpenAPI document."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from serve_fixtures import CLASSES, COLOURS, colour_image, encode
from serve_fixtures import check_response

from image_classifier.inference.kinds import open_classifier
from image_classifier.serve import ModelStore, create_app

RED, GREEN, BLUE = CLASSES


@pytest.fixture(scope="module")
def model_dir(colour_model):
    return colour_model


@pytest.fixture(scope="module")
def client(model_dir):
    store = ModelStore.from_paths([model_dir]).load()
    app = create_app(store)
    yield app.test_client()
    store.close()


def _post(client, query: str = "", **kw):
    r = client.post("/api/predict" + query, **kw)
    openapi = client.get("/api/openapi.json").get_json()
    check_response(openapi, "/api/predict", "post", r.status_code, r.get_json())
    return r


def test_explain_returns_a_png_of_the_photo_with_the_heat_map(client, model_dir):
    photo = colour_image(COLOURS[GREEN], size=(90, 60), seed=5)
    r = _post(client, "?explain=1", data=encode(photo, "PNG"), content_type="image/png")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    ex = body["explanation"]
    assert ex["method"] == "grad-cam" and ex["target"] == body["label"] == GREEN
    net = open_classifier(model_dir).module
    assert ex["layer"] in dict(net.named_modules())  # a real module of the network
    with Image.open(io.BytesIO(base64.b64decode(ex["png_base64"]))) as im:
        assert im.format == "PNG" and im.size == (90, 60)
        drawn = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert np.abs(drawn - np.asarray(photo, dtype=np.float32)).mean() > 10  # the heat map is on it
    assert body["timing"]["explain_ms"] > 0


@pytest.mark.parametrize("query", ["", "?explain=0", "?explain=false", "?explain="])
def test_no_explanation_unless_asked(client, query):
    r = _post(client, query, data=encode(colour_image(COLOURS[BLUE], seed=2)), content_type="image/jpeg")
    assert r.status_code == 200
    body = r.get_json()
    assert "explanation" not in body and "explain_ms" not in body["timing"]
    assert body["label"] == BLUE


def test_explain_as_a_form_field_and_another_target_is_the_answer(client):
    jpeg = encode(colour_image(COLOURS[RED], size=(80, 80), seed=9))
    r = _post(client, data={"file": (io.BytesIO(jpeg), "red.jpg"), "explain": "1"})
    assert r.status_code == 200
    body = r.get_json()
    assert body["explanation"]["target"] == body["label"] == RED
    # The form field overrides the query, as for model and top_k.
    r = _post(client, "?explain=1", data={"file": (io.BytesIO(jpeg), "red.jpg"), "explain": "0"})
    assert "explanation" not in r.get_json()


def test_a_bad_explain_value_is_422(client):
    r = _post(client, "?explain=maybe", data=encode(colour_image(COLOURS[RED])), content_type="image/jpeg")
    assert r.status_code == 422 and r.get_json()["kind"] == "bad_parameter"
    assert "explain must be 1 or 0" in r.get_json()["error"]
