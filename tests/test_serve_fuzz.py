"""Property-based tests of the serve API (hypothesis): random bodies, multipart shapes, content
types, query parameters, headers, methods and paths, sent through Flask's test client to the app
with a real trained model. Whatever comes in: never a 5xx, never a traceback in a body, every
answer that is not a 2xx is JSON ``{"error", "kind"}`` with a documented kind, and every answer of
POST /api/predict is one the OpenAPI document lists.

Bounded and reproducible for CI: ``derandomize=True`` (examples derived from each test's source,
the same on every run), a few hundred examples in all, no deadline (a loaded machine is slow).
"""
from __future__ import annotations

import io
import json
import os
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_fixtures import CLASSES, COLOURS, colour_image, encode, make_run
from serve_fixtures import check_response

from image_classifier.serve import ModelStore, create_app
from image_classifier.serve.contract import ERROR_KINDS

# FUZZ_EXAMPLES=5000 FUZZ_RANDOM=1 pytest tests/test_serve_fuzz.py: a longer, randomised hunt.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
                derandomize=not os.environ.get("FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMIT = 64 * 1024  # a small upload limit, so that bodies over it are cheap to make


@pytest.fixture(scope="module")
def client(tmp_path_factory, colour_model):
    run_dir = make_run(tmp_path_factory.mktemp("fuzz") / "run", colour_model)
    store = ModelStore.from_paths([run_dir]).load()
    app = create_app(store, max_upload_bytes=LIMIT)
    yield app.test_client()
    store.close()


@pytest.fixture(scope="module")
def openapi(client) -> dict:
    return client.get("/api/openapi.json").get_json()


def _images() -> list[bytes]:
    img = colour_image(COLOURS[CLASSES[1]], size=(40, 30), seed=5)
    return [encode(img, fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP")]


IMAGES = _images()


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Random bytes, a real image, or a real image truncated, bit-flipped or padded."""
    kind = draw(st.sampled_from(["random", "image", "truncated", "flipped", "padded", "big"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    image = draw(st.sampled_from(IMAGES))
    if kind == "image":
        return image
    if kind == "truncated":
        return image[:draw(st.integers(0, len(image) - 1))]
    if kind == "flipped":
        data = bytearray(image)
        for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[pos] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "padded":
        return image + draw(st.binary(min_size=1, max_size=512))
    return image + bytes(LIMIT + draw(st.integers(-64, 64)))  # around the upload limit


HEADER_NAMES = ["Accept", "Accept-Encoding", "Accept-Language", "Content-Encoding", "Content-Language",
                "Content-Disposition", "X-Forwarded-For", "X-Forwarded-Proto", "Forwarded", "Range",
                "Expect", "Origin", "Referer", "Cookie", "User-Agent", "X-Requested-With", "Authorization"]
# Header values a client can send: latin-1 text without CR/LF (which no HTTP server would pass on).
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
                        max_size=60)
headers = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=4)

content_types = st.one_of(
    st.none(),
    st.sampled_from(["image/jpeg", "image/png", "image/*", "application/octet-stream", "text/plain",
                     "application/json", "application/x-www-form-urlencoded", "multipart/form-data",
                     "multipart/form-data; boundary=", "multipart/form-data; boundary=\"",
                     "multipart/form-data; boundary=x; charset=utf-7", "multipart/mixed; boundary=b",
                     "image/jpeg; charset=\x00", ";;;", "", "*/*"]),
    header_values,
)

top_k_values = st.one_of(
    st.sampled_from(["", "1", "2", "3", "5", "0", "-1", "1.5", "1e3", " 2 ", "\u0663", "99999999999999999999",
                     "0x10", "NaN", "inf", "\x00", "2\x00"]),
    st.integers(-10**30, 10**30).map(str),
    st.text(max_size=20),
)
model_values = st.one_of(st.sampled_from(["tiny_a", "tiny_b", "", "TINY_A", "tiny_a ", "../tiny_a", "best"]),
                         st.text(max_size=30))


@st.composite
def queries(draw: st.DrawFn) -> str:
    params = {}
    if draw(st.booleans()):
        params["top_k"] = draw(top_k_values)
    if draw(st.booleans()):
        params["model"] = draw(model_values)
    query = urllib.parse.urlencode(params)
    if draw(st.booleans()):  # raw junk: bad percent-escapes, repeated keys, bare separators
        query += draw(st.sampled_from(["&top_k=%zz", "&model=%", "&&&", "&top_k", "&top_k=1&top_k=2",
                                       "&model=%C3%28", "&%00=1"]))
    return query


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """A multipart body of random shape: parts with any name, filename and content type (or none),
    an image, random bytes or text as content, then possibly cut short or with a wrong boundary."""
    boundary = draw(st.text(st.sampled_from("abcXYZ0123456789-_'()+,./:=?"), min_size=1, max_size=70))
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.one_of(st.sampled_from(["file", "model", "top_k", "image", ""]), st.text(max_size=12)))
        disposition = f'form-data; name="{name}"'
        if draw(st.booleans()):
            filename = draw(st.one_of(st.sampled_from(["photo.jpg", "../../etc/passwd", "a\"b.png", "", "x" * 300]),
                                      st.text(max_size=30)))
            disposition += f'; filename="{filename}"'
        lines = [f"Content-Disposition: {disposition}"]
        if draw(st.booleans()):
            lines.append(f"Content-Type: {draw(st.sampled_from(['image/jpeg', 'text/plain', '', 'x/y; a=b']))}")
        content = draw(st.one_of(bodies(), top_k_values.map(str.encode), model_values.map(str.encode)))
        head = "\r\n".join(lines).encode("utf-8", "surrogatepass")
        parts.append(b"--" + boundary.encode() + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n")
    body = b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"
    cut = draw(st.sampled_from(["none", "none", "truncate", "no-end"]))
    if cut == "truncate":
        body = body[:draw(st.integers(0, len(body)))]
    elif cut == "no-end":
        body = body[:-len(boundary) - 6]
    sent_boundary = boundary if draw(st.integers(0, 4)) else draw(header_values)
    return body, f"multipart/form-data; boundary={sent_boundary}"


# (status, kind) of every answer, by test, for the last test.
SEEN: dict[str, set[tuple[int, str | None]]] = {}


def _check(response, test: str, method: str = "POST") -> None:
    seen = SEEN.setdefault(test, set())
    text = response.get_data(as_text=True)
    assert response.status_code < 500, (response.status_code, text[:300])
    assert "Traceback" not in text and 'File "' not in text, text[:300]
    if 200 <= response.status_code < 300 or method == "HEAD":
        seen.add((response.status_code, None))
        return
    assert response.mimetype == "application/json", (response.status_code, response.mimetype, text[:300])
    body = json.loads(text)
    assert set(body) == {"error", "kind"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert body["kind"] in ERROR_KINDS, body
    seen.add((response.status_code, body["kind"]))


@FUZZ
@given(body=bodies(), content_type=content_types, query=queries(), extra=headers)
def test_fuzzed_raw_uploads(client, openapi, body, content_type, query, extra):
    kwargs = {"content_type": content_type} if content_type is not None else {}
    response = client.post(f"/api/predict?{query}", data=body, headers=extra, **kwargs)
    _check(response, "raw")
    check_response(openapi, "/api/predict", "post", response.status_code, response.get_json())
    if response.status_code == 200:
        assert response.get_json()["label"] in CLASSES


@FUZZ
@given(multipart=multipart_bodies(), query=queries(), extra=headers)
def test_fuzzed_multipart_uploads(client, openapi, multipart, query, extra):
    body, content_type = multipart
    response = client.post(f"/api/predict?{query}", data=body, content_type=content_type, headers=extra)
    _check(response, "multipart")
    check_response(openapi, "/api/predict", "post", response.status_code, response.get_json())


@FUZZ
@given(file=bodies(), filename=st.text(max_size=40), fields=st.dictionaries(
    st.sampled_from(["model", "top_k", "file", "other"]), st.one_of(top_k_values, model_values), max_size=3))
def test_fuzzed_forms_built_by_a_client_library(client, openapi, file, filename, fields):
    """Well-formed multipart (as browsers and requests build it) with random files and fields."""
    data: dict = dict(fields)
    data["file"] = (io.BytesIO(file), filename)
    response = client.post("/api/predict", data=data, content_type="multipart/form-data")
    _check(response, "form")
    check_response(openapi, "/api/predict", "post", response.status_code, response.get_json())


ROUTES = ["/", "/api/predict", "/api/models", "/api/health", "/api/openapi.json", "/static/app.js",
          "/static/style.css", "/static/", "/static/../app.py", "/api/", "/api", "//api/health", "/api/predict/"]


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]),
       path=st.one_of(st.sampled_from(ROUTES), st.text(max_size=40).map(lambda t: "/" + urllib.parse.quote(t))),
       query=queries(), extra=headers, body=st.one_of(st.just(b""), st.binary(max_size=256)))
def test_fuzzed_methods_paths_and_headers(client, method, path, query, extra, body):
    response = client.open(f"{path}?{query}", method=method, headers=extra, data=body)
    _check(response, "routes", method)


def test_the_fuzz_reached_every_kind_of_answer():
    """The strategies are not degenerate (all rejected at the first check, say): over the tests
    above, images were classified and every main error was provoked."""
    if set(SEEN) != {"raw", "multipart", "form", "routes"}:
        pytest.skip("run with all the fuzz tests above")
    answers = set().union(*SEEN.values())
    statuses = {status for status, _ in answers}
    kinds = {kind for _, kind in answers}
    assert {200, 400, 404, 405, 413, 415, 422} <= statuses, statuses
    assert {"corrupt", "empty", "no_file", "unsupported", "too_large", "bad_parameter", "unknown_model",
            "not_found", "method_not_allowed"} <= kinds, kinds
