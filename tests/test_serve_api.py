"""The serve API with a real trained model and real image files: Flask's test client for the
behaviour, real HTTP through waitress for limits, concurrency and the command line.

Every response a test sees is also checked against the server's own OpenAPI document.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from conftest import wait_until
from serve_fixtures import CLASSES, COLOURS, check_response, colour_image, encode, make_run, validate

from image_classifier.serve import ModelStore, create_app
from image_classifier.serve.server import BackgroundServer

RED, GREEN, BLUE = CLASSES


# ---- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def model_dir(colour_model) -> Path:
    return colour_model


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, model_dir) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "demo", model_dir)


@pytest.fixture(scope="session")
def store(run_dir) -> ModelStore:
    return ModelStore.from_paths([run_dir]).load()


@pytest.fixture(scope="session")
def app(store):
    return create_app(store)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def openapi(app) -> dict:
    return app.test_client().get("/api/openapi.json").get_json()


@pytest.fixture()
def api(client, openapi):
    """Calls the API and checks every answer against the OpenAPI document."""

    class Api:
        def post(self, path: str, **kw):
            response = client.post(path, **kw)
            check_response(openapi, path.split("?")[0], "post", response.status_code, response.get_json())
            return response

        def get(self, path: str, **kw):
            response = client.get(path, **kw)
            check_response(openapi, path.split("?")[0], "get", response.status_code, response.get_json())
            return response

    return Api()


def red_jpeg(seed: int = 1) -> bytes:
    return encode(colour_image(COLOURS[RED], seed=seed))


# ---- predictions ---------------------------------------------------------------------------------

def test_predict_multipart_gives_the_right_class_and_a_full_answer(api):
    for name, rgb in COLOURS.items():
        r = api.post("/api/predict", data={"file": (io.BytesIO(encode(colour_image(rgb, seed=7))), "photo.jpg")})
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        assert body["label"] == name
        assert body["model"] == "tiny_b"  # the run's best
        assert set(body["probabilities"]) == set(CLASSES)
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
        assert body["probabilities"][name] == max(body["probabilities"].values())
        probs = [t["probability"] for t in body["top"]]
        assert [t["label"] for t in body["top"]][0] == name and probs == sorted(probs, reverse=True)
        assert len(body["top"]) == len(CLASSES)  # default top_k 5, capped at 3 classes
        assert body["latency_ms"] > 0
        assert body["latency_ms"] >= body["timing"]["decode_ms"]


def test_raw_body_multipart_and_curl_default_content_type_agree(api):
    data = red_jpeg()
    answers = [
        api.post("/api/predict", data={"file": (io.BytesIO(data), "a.jpg")}),
        api.post("/api/predict", data=data, content_type="image/jpeg"),
        api.post("/api/predict", data=data, content_type="application/octet-stream"),
        # `curl --data-binary @photo.jpg` sends application/x-www-form-urlencoded: still the raw image.
        api.post("/api/predict", data=data, content_type="application/x-www-form-urlencoded"),
        api.post("/api/predict", data=data),
    ]
    assert all(a.status_code == 200 for a in answers)
    first = answers[0].get_json()["probabilities"]
    for a in answers[1:]:
        assert a.get_json()["probabilities"] == pytest.approx(first, abs=1e-6)


def test_png_named_jpg_is_read_from_its_content(api):
    png = encode(colour_image(COLOURS[BLUE], seed=3), "PNG")
    assert png.startswith(b"\x89PNG")
    r = api.post("/api/predict", data={"file": (io.BytesIO(png), "holiday.jpg")}, content_type="multipart/form-data")
    assert r.status_code == 200 and r.get_json()["label"] == BLUE


def test_other_formats_modes_and_exif_orientation(api):
    img = colour_image(COLOURS[GREEN], seed=5)
    for fmt, kw in [("WEBP", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("PNG", {})]:
        r = api.post("/api/predict", data=encode(img, fmt, **kw))
        assert r.status_code == 200 and r.get_json()["label"] == GREEN, fmt
    rgba = img.convert("RGBA")
    assert api.post("/api/predict", data=encode(rgba, "PNG")).get_json()["label"] == GREEN
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: a phone photo
    r = api.post("/api/predict", data=encode(img, "JPEG", exif=exif.tobytes()))
    assert r.status_code == 200 and r.get_json()["label"] == GREEN


def test_model_choice_and_top_k(api):
    data = red_jpeg()
    r = api.post("/api/predict?model=tiny_a&top_k=1", data=data)
    assert r.status_code == 200
    body = r.get_json()
    assert body["model"] == "tiny_a" and len(body["top"]) == 1 and body["top"][0]["label"] == RED
    # form fields override the query string
    r = api.post("/api/predict?model=nope&top_k=abc",
                 data={"file": (io.BytesIO(data), "x.jpg"), "model": "tiny_a", "top_k": "2"})
    assert r.status_code == 200 and r.get_json()["model"] == "tiny_a" and len(r.get_json()["top"]) == 2
    r = api.post("/api/predict?top_k=1000", data=data)
    assert r.status_code == 200 and len(r.get_json()["top"]) == len(CLASSES)


@pytest.mark.parametrize("query", ["top_k=0", "top_k=-2", "top_k=abc", "top_k=1.5", "top_k=%00", "model=missing",
                                   "model=%3Cscript%3E"])
def test_bad_parameters_are_422(api, query):
    r = api.post(f"/api/predict?{query}", data=red_jpeg())
    assert r.status_code == 422
    assert r.get_json()["error"]


# ---- the error cases -----------------------------------------------------------------------------

def test_truncated_jpeg_is_400(api):
    data = red_jpeg()
    # Cut in the pixel data, in the header, and before the header ends: each says what is wrong.
    for cut, reason in ((len(data) // 2, "truncated image data"), (200, "truncated image header"),
                        (20, "the file starts like a JPEG but cannot be decoded")):
        r = api.post("/api/predict", data={"file": (io.BytesIO(data[:cut]), "cut.jpg")})
        assert r.status_code == 400, (cut, r.get_json())
        assert r.get_json()["kind"] == "corrupt" and reason in r.get_json()["error"], (cut, r.get_json())


def test_text_and_other_non_images_are_415(api):
    cases = {
        "notes.txt": b"just some notes, not a photo\n",
        "page.jpg": b"<!doctype html><html><body>404</body></html>",
        "doc.pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n",
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
        "random.bin": bytes(range(256)) * 4,
    }
    for name, data in cases.items():
        r = api.post("/api/predict", data={"file": (io.BytesIO(data), name)})
        assert r.status_code == 415, (name, r.get_json())
        assert r.get_json()["error"]


def test_missing_and_empty_uploads_are_400(api):
    assert api.post("/api/predict", data=b"").status_code == 400
    assert api.post("/api/predict", data=b"", content_type="image/jpeg").status_code == 400
    r = api.post("/api/predict", data={"file": (io.BytesIO(b""), "empty.jpg")})
    assert r.status_code == 400 and "empty" in r.get_json()["error"]
    r = api.post("/api/predict", data={"image": (io.BytesIO(red_jpeg()), "x.jpg")})
    assert r.status_code == 400 and "'file'" in r.get_json()["error"]
    r = api.post("/api/predict", data={"model": "tiny_a"}, content_type="multipart/form-data")
    assert r.status_code == 400


def test_oversized_uploads_are_413(store, openapi):
    client = create_app(store, max_upload_bytes=50_000).test_client()
    big = os.urandom(60_000)
    for kwargs in ({"data": big, "content_type": "image/jpeg"},
                   {"data": {"file": (io.BytesIO(big), "big.jpg")}}):
        r = client.post("/api/predict", **kwargs)
        check_response(openapi, "/api/predict", "post", r.status_code, r.get_json())
        assert r.status_code == 413 and "limit" in r.get_json()["error"]
    # exactly at the limit is accepted (and then judged on its content)
    r = client.post("/api/predict", data={"file": (io.BytesIO(big[:50_000]), "x.jpg")})
    assert r.status_code == 415


def test_default_limit_is_10_mb(client):
    r = client.post("/api/predict", data=b"\xff" * (10 * 1024 * 1024 + 1), content_type="image/jpeg")
    assert r.status_code == 413


def test_decompression_bomb_png_is_refused_without_decoding(api, decoder_calls):
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")  # 400 MP in a few tens of KB
    data = buf.getvalue()
    assert len(data) < 1_000_000
    decoder_calls.clear()
    r = api.post("/api/predict", data={"file": (io.BytesIO(data), "bomb.png")})
    assert r.status_code == 413
    assert "too many pixels" in r.get_json()["error"]
    assert decoder_calls == []  # refused from the header, not after decoding 400 MP
    # A photo the server accepts is decoded (so the list above would have seen a decode).
    assert api.post("/api/predict", data={"file": (io.BytesIO(red_jpeg()), "photo.jpg")}).status_code == 200
    assert "jpeg" in decoder_calls


def test_garbage_never_gives_500_or_a_traceback(client):
    jpeg = red_jpeg()
    png = encode(colour_image(COLOURS[GREEN]), "PNG")
    gif = encode(colour_image(COLOURS[GREEN]), "GIF")
    bmp = encode(colour_image(COLOURS[GREEN]), "BMP")
    tif = encode(colour_image(COLOURS[GREEN]), "TIFF")
    bodies = [b"\x00", b"\xff\xd8", b"\xff\xd8\xff\xe0" + b"\x00" * 50, b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM",
              b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP", jpeg[:4] + os.urandom(400)]
    for data in (jpeg, png, gif, bmp, tif):
        bodies += [data[:n] for n in (8, 16, 33, 64, 100, len(data) // 3, len(data) - 1)]
        corrupt = bytearray(data)
        for i in range(40, len(corrupt), 97):
            corrupt[i] ^= 0x5A
        bodies.append(bytes(corrupt))
    for data in bodies:
        r = client.post("/api/predict", data=data, content_type="image/jpeg")
        assert r.status_code in (200, 400, 413, 415), (data[:16], r.status_code, r.data[:200])
        assert "Traceback" not in r.get_data(as_text=True)
        assert set(r.get_json()) == ({"error", "kind"} if r.status_code != 200 else set(r.get_json()))
    # malformed multipart bodies
    for body, ctype in [(b"--x\r\nnot a part", "multipart/form-data; boundary=x"),
                        (jpeg, "multipart/form-data"),
                        (jpeg, "multipart/form-data; boundary="),
                        (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n" + jpeg[:100],
                         "multipart/form-data; boundary=b")]:
        r = client.post("/api/predict", data=body, content_type=ctype)
        assert r.status_code in (400, 413, 415), (ctype, r.status_code, r.data[:200])
        assert "error" in r.get_json()


def test_unknown_routes_and_methods_are_json(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "error" in r.get_json()
    r = client.get("/api/predict")
    assert r.status_code == 405 and "error" in r.get_json() and "POST" in r.headers["Allow"]
    r = client.delete("/api/models")
    assert r.status_code == 405 and "error" in r.get_json()


# ---- models, health, OpenAPI ---------------------------------------------------------------------

def test_models_lists_the_run_with_its_best_and_test_metrics(api):
    r = api.get("/api/models")
    body = r.get_json()
    assert r.status_code == 200
    assert body["default"] == "tiny_b"
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {"tiny_a", "tiny_b"}
    assert by_name["tiny_b"]["default"] and not by_name["tiny_a"]["default"]
    assert by_name["tiny_b"]["test"]["accuracy"] == 0.9
    assert by_name["tiny_b"]["test"]["accuracy_ci95"] == [0.8, 0.97]
    assert by_name["tiny_b"]["validation_accuracy"] == 0.95
    assert by_name["tiny_a"]["test"] is None  # not evaluated
    assert by_name["tiny_b"]["classes"] == CLASSES and by_name["tiny_b"]["architecture"] == "alexnet_like"
    assert body["limits"]["max_upload_bytes"] == 10 * 1024 * 1024


def test_latency_median_counts_requests(store):
    client = create_app(store).test_client()
    before = {m["name"]: m["requests"] for m in client.get("/api/models").get_json()["models"]}
    for _ in range(3):
        assert client.post("/api/predict?model=tiny_a", data=red_jpeg()).status_code == 200
    after = {m["name"]: m for m in client.get("/api/models").get_json()["models"]}
    assert after["tiny_a"]["requests"] == before["tiny_a"] + 3
    assert after["tiny_a"]["latency_ms_median"] > 0


def test_health_is_ready_only_once_models_are_loaded(run_dir, openapi):
    store = ModelStore.from_paths([run_dir])
    client = create_app(store, load=False).test_client()
    r = client.get("/api/health")
    check_response(openapi, "/api/health", "get", r.status_code, r.get_json())
    assert r.status_code == 503 and r.get_json()["status"] == "loading"
    r = client.post("/api/predict", data=red_jpeg())
    check_response(openapi, "/api/predict", "post", r.status_code, r.get_json())
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert client.get("/api/models").status_code == 503
    store.start_loading().join(timeout=60)
    r = client.get("/api/health")
    check_response(openapi, "/api/health", "get", r.status_code, r.get_json())
    assert r.status_code == 200 and r.get_json() == {"status": "ready", "models": ["tiny_a", "tiny_b"],
                                                     "default": "tiny_b"}
    assert client.post("/api/predict", data=red_jpeg()).get_json()["label"] == RED


def failed_load_client(model_dir: Path, tmp_path: Path):
    """A test client of an app whose one model (a copy with broken weights) failed to load."""
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "weights.safetensors").write_bytes(b"not weights")
    store = ModelStore.from_paths([broken])
    client = create_app(store, load=False).test_client()
    store.start_loading().join(timeout=60)
    return client


def test_health_reports_a_failed_load(tmp_path, model_dir):
    client = failed_load_client(model_dir, tmp_path)
    r = client.get("/api/health")
    assert r.status_code == 503 and r.get_json()["status"] == "failed"
    assert "weights" in r.get_json()["error"]


def test_openapi_document_matches_the_routes(app, openapi):
    assert openapi["openapi"].startswith("3.1")
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            routes.setdefault(rule.rule, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: set(ops) for path, ops in openapi["paths"].items()}
    assert routes == documented
    predict = openapi["paths"]["/api/predict"]["post"]
    assert {p["name"] for p in predict["parameters"]} == {"model", "top_k", "explain", "keep"}
    assert predict["parameters"][0]["schema"]["enum"] == ["tiny_a", "tiny_b"]
    assert set(predict["responses"]) == {"200", "400", "413", "415", "422", "503", "default"}
    assert set(predict["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]) == {
        "file", "model", "top_k", "explain", "keep"}


def test_security_headers_everywhere(client):
    for path in ("/", "/api/health", "/api/models", "/static/app.js", "/static/style.css", "/api/nothing"):
        r = client.get(path)
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert not re.search(r"https?:|\*", csp), csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    assert client.get("/api/health").headers["Cache-Control"] == "no-store"


def test_page_has_no_external_resource_and_no_inline_script(client):
    page = client.get("/").get_data(as_text=True)
    js = client.get("/static/app.js").get_data(as_text=True)
    css = client.get("/static/style.css").get_data(as_text=True)
    for text in (page, js, css):
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
        assert "@import" not in text and "url(http" not in text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline scripts would need 'unsafe-inline'"
    assert not re.search(r"<[^>]+\son[a-z]+=", page), "inline event handlers are blocked by the CSP"
    assert 'name="viewport"' in page
    # class names reach the page only through textContent, never as HTML
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js


# ---- real HTTP through waitress ------------------------------------------------------------------

def _post(url: str, data: bytes, headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {"Content-Type": "image/jpeg"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _multipart(data: bytes, filename: str = "photo.jpg", fields: dict | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_real_http_limits_and_chunked_upload(store):
    limit = 100_000
    app = create_app(store, max_upload_bytes=limit)
    with BackgroundServer(app, max_upload_bytes=limit) as srv:
        status, body = _post(srv.url + "/api/predict", red_jpeg())
        assert status == 200 and json.loads(body)["label"] == RED
        # just over the limit: the app answers a JSON 413
        status, body = _post(srv.url + "/api/predict", b"\xff" * (limit + 1))
        assert status == 413 and "limit" in json.loads(body)["error"]
        # 50 times over it, but under the server's bound: read, discarded, and a JSON 413 from the app
        status, body = _post(srv.url + "/api/predict", b"\xff" * (50 * limit))
        assert status == 413 and json.loads(body)["kind"] == "too_large"
        # at the server's bound: refused by waitress from the Content-Length alone, unread
        conn = http.client.HTTPConnection(srv.url.split("//")[1], timeout=10)
        conn.putrequest("POST", "/api/predict")
        conn.putheader("Content-Type", "image/jpeg")
        conn.putheader("Content-Length", str(srv.server.adj.max_request_body_size))
        conn.endheaders()
        assert conn.getresponse().status == 413
        conn.close()
        # chunked transfer encoding (no Content-Length)
        conn = http.client.HTTPConnection(srv.url.split("//")[1], timeout=10)
        data = red_jpeg()
        conn.request("POST", "/api/predict", body=iter([data[:500], data[500:]]),
                     headers={"Content-Type": "image/jpeg"}, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["label"] == RED
        conn.close()
        # a multipart upload with the form fields
        body, ctype = _multipart(red_jpeg(), fields={"model": "tiny_a", "top_k": "1"})
        status, raw = _post(srv.url + "/api/predict", body, {"Content-Type": ctype})
        assert status == 200 and json.loads(raw)["model"] == "tiny_a" and len(json.loads(raw)["top"]) == 1


def test_uploads_are_never_written_to_disk(store):
    """Watches every file the process opens for writing (Python audit hook) during big uploads."""
    written: list[str] = []
    watching = threading.Event()

    def hook(event: str, args: tuple) -> None:
        if watching.is_set() and event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing:
                written.append(str(path))

    sys.addaudithook(hook)  # cannot be removed; inert once `watching` is cleared
    big = colour_image(COLOURS[GREEN], size=(1600, 1200), seed=2)
    png = encode(big, "PNG")  # noise does not compress: several MB
    assert len(png) > 2_000_000
    app = create_app(store)
    with BackgroundServer(app, max_upload_bytes=10 * 1024 * 1024) as srv:
        watching.set()
        try:
            body, ctype = _multipart(png, filename="../../etc/evil name.png")
            status, raw = _post(srv.url + "/api/predict", body, {"Content-Type": ctype})
            status2, _ = _post(srv.url + "/api/predict", png, {"Content-Type": "image/png"})
        finally:
            watching.clear()
    assert status == 200 and json.loads(raw)["label"] == GREEN and status2 == 200
    assert written == []


# ---- the error contract, for every client -----------------------------------------------------------

MB = 1024 * 1024


def _assert_error(openapi: dict, status: int, body: bytes | str, want_status: int, want_kind: str) -> dict:
    """An answer is the documented JSON error: ``{"error": "...", "kind": "..."}`` and nothing else."""
    assert status == want_status, (status, body[:300])
    payload = json.loads(body)
    validate(openapi, openapi["components"]["schemas"]["Error"], payload)
    assert payload["kind"] == want_kind and payload["error"], payload
    assert "Traceback" not in payload["error"]
    return payload


def test_a_30_mb_upload_gets_the_json_413_from_urllib_and_http_client(store, openapi):
    """urllib (and requests) send the whole body before reading the answer: they used to get
    'Connection reset by peer' (waitress refused the body from its Content-Length and closed the
    socket). Now waitress reads and discards it and the app answers its JSON 413, with or without
    a Content-Length, and the connection stays usable."""
    body = os.urandom(30 * MB)
    with BackgroundServer(create_app(store), max_upload_bytes=10 * MB) as srv:
        url = srv.url + "/api/predict"
        status, raw = _post(url, body)
        assert "limit" in _assert_error(openapi, status, raw, 413, "too_large")["error"]
        data, ctype = _multipart(body)
        status, raw = _post(url, data, {"Content-Type": ctype})
        _assert_error(openapi, status, raw, 413, "too_large")
        # chunked (no Content-Length), then a good image on the same keep-alive connection
        conn = http.client.HTTPConnection(srv.url.split("//")[1], timeout=60)
        try:
            chunks = (body[i:i + MB] for i in range(0, len(body), MB))
            conn.request("POST", "/api/predict", body=chunks, headers={"Content-Type": "image/jpeg"},
                         encode_chunked=True)
            resp = conn.getresponse()
            _assert_error(openapi, resp.status, resp.read(), 413, "too_large")
            assert resp.headers.get_content_type() == "application/json"
            conn.request("POST", "/api/predict", body=red_jpeg(), headers={"Content-Type": "image/jpeg"})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["label"] == RED
        finally:
            conn.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_30_mb_upload_gets_the_json_413_from_curl(store, openapi, tmp_path):
    """curl used to get waitress' plain-text page ("Request Entity Too Large / exceeds max_body")."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(30 * MB))
    with BackgroundServer(create_app(store), max_upload_bytes=10 * MB) as srv:
        for how in (["--data-binary", f"@{big}", "-H", "Content-Type: image/jpeg"], ["-F", f"file=@{big}"]):
            proc = subprocess.run(["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", *how,
                                   srv.url + "/api/predict"], capture_output=True, timeout=90)
            assert proc.returncode == 0, proc.stderr
            text, code = proc.stdout.rsplit(b"\n", 1)
            _assert_error(openapi, int(code), text, 413, "too_large")


def test_an_oversized_body_is_spooled_to_disk_never_held_in_memory(store, openapi):
    """Waitress keeps a body the app can accept in memory (uploads are never written to disk, see
    above) and spools a larger one to an anonymous temporary file, which the app never reads:
    the server's Python heap grows by about the upload limit, not by the body."""
    import tracemalloc

    body = os.urandom(30 * MB)
    with BackgroundServer(create_app(store, max_upload_bytes=MB), max_upload_bytes=MB) as srv:
        tracemalloc.start()
        try:
            status, raw = _post(srv.url + "/api/predict", body)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    _assert_error(openapi, status, raw, 413, "too_large")
    assert peak < 6 * MB, f"{peak / MB:.1f} MB of Python heap for a 30 MB body over a 1 MB limit"


def test_every_error_of_every_route_is_json_with_a_kind(store, openapi):
    client = create_app(store, max_upload_bytes=50_000).test_client()
    jpeg = red_jpeg()
    cases = [
        (client.get("/api/nothing"), 404, "not_found"),
        (client.get("/nothing.html"), 404, "not_found"),
        (client.get("/static/nothing.js"), 404, "not_found"),
        (client.get("/api/predict"), 405, "method_not_allowed"),
        (client.post("/"), 405, "method_not_allowed"),
        (client.delete("/api/models"), 405, "method_not_allowed"),
        (client.put("/api/health"), 405, "method_not_allowed"),
        (client.post("/api/openapi.json"), 405, "method_not_allowed"),
        (client.post("/api/predict", data=b""), 400, "empty"),
        (client.post("/api/predict", data={"file": (io.BytesIO(b""), "empty.jpg")}), 400, "empty"),
        (client.post("/api/predict", data={"image": (io.BytesIO(jpeg), "x.jpg")}), 400, "no_file"),
        (client.post("/api/predict", data=jpeg[:200]), 400, "corrupt"),
        (client.post("/api/predict", data=b"just some notes\n"), 415, "unsupported"),
        (client.post("/api/predict", data=os.urandom(60_000)), 413, "too_large"),
        (client.post("/api/predict", data={"file": (io.BytesIO(os.urandom(60_000)), "x.jpg")}), 413, "too_large"),
        (client.post("/api/predict?top_k=abc", data=jpeg), 422, "bad_parameter"),
        (client.post("/api/predict?top_k=0", data=jpeg), 422, "bad_parameter"),
        (client.post("/api/predict?model=nope", data=jpeg), 422, "unknown_model"),
    ]
    for response, status, kind in cases:
        assert response.mimetype == "application/json", (status, kind, response.data[:200])
        _assert_error(openapi, response.status_code, response.data, status, kind)
    assert "POST" in client.get("/api/predict").headers["Allow"]


def test_loading_failed_stopping_and_internal_errors_have_kinds(run_dir, model_dir, tmp_path, openapi, monkeypatch):
    def check(client, kind: str, health_status: str) -> None:
        for method, path in (("post", "/api/predict"), ("get", "/api/models")):
            r = getattr(client, method)(path, data=red_jpeg()) if method == "post" else client.get(path)
            check_response(openapi, path, method, r.status_code, r.get_json())
            _assert_error(openapi, r.status_code, r.data, 503, kind)
        health = client.get("/api/health")
        check_response(openapi, "/api/health", "get", health.status_code, health.get_json())
        assert health.status_code == 503
        assert health.get_json()["status"] == health_status and health.get_json()["kind"] == kind
        assert health.get_json()["error"]

    loading = ModelStore.from_paths([run_dir])
    check(create_app(loading, load=False).test_client(), "not_ready", "loading")

    check(failed_load_client(model_dir, tmp_path), "load_failed", "failed")

    closed = ModelStore.from_paths([run_dir], only=["tiny_a"]).load()
    client = create_app(closed).test_client()
    closed.close()
    check(client, "stopping", "stopping")

    crashing = ModelStore.from_paths([run_dir], only=["tiny_a"]).load()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(crashing, "predict_bytes", boom)
    r = create_app(crashing).test_client().post("/api/predict", data=red_jpeg())
    payload = _assert_error(openapi, r.status_code, r.data, 500, "internal")
    assert "secret" not in payload["error"]
    crashing.close()


def test_real_http_404_and_405_are_json_with_a_kind(store, openapi):
    with BackgroundServer(create_app(store), max_upload_bytes=10 * MB) as srv:
        for method, path, status, kind in [("GET", "/nothing", 404, "not_found"),
                                           ("GET", "/api/predict", 405, "method_not_allowed"),
                                           ("DELETE", "/api/models", 405, "method_not_allowed")]:
            req = urllib.request.Request(srv.url + path, method=method)
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(req, timeout=10)
            assert info.value.headers.get_content_type() == "application/json"
            _assert_error(openapi, info.value.code, info.value.read(), status, kind)


def test_openapi_documents_every_error_kind(openapi):
    from image_classifier.serve.contract import ERROR_KINDS

    error = openapi["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "kind"]
    assert error["properties"]["kind"]["enum"] == list(ERROR_KINDS)
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}, (path, method)


def test_parallel_requests_match_sequential_answers(run_dir):
    """Many clients at once get exactly the answers each image gets alone, with forward passes
    really running concurrently (max_parallel=4) and serialised (max_parallel=1)."""
    images = []
    for i in range(24):
        rgb = list(COLOURS.values())[i % 3]
        images.append(encode(colour_image(rgb, size=(40 + 7 * i, 30 + 5 * i), seed=100 + i),
                             "JPEG" if i % 2 else "PNG"))
    for max_parallel in (4, 1):
        store = ModelStore.from_paths([run_dir], max_parallel=max_parallel).load()
        with BackgroundServer(create_app(store), threads=8, max_upload_bytes=10 * 1024 * 1024) as srv:
            def ask(i: int, model: str) -> dict:
                status, raw = _post(f"{srv.url}/api/predict?model={model}", images[i])
                assert status == 200, raw
                return json.loads(raw)

            jobs = [(i, m) for m in ("tiny_a", "tiny_b") for i in range(len(images))]
            sequential = {job: ask(*job) for job in jobs}
            with ThreadPoolExecutor(max_workers=16) as pool:
                for _ in range(2):
                    parallel = dict(zip(jobs * 2, pool.map(lambda job: ask(*job), jobs * 2)))
                    for job in jobs:
                        assert parallel[job]["label"] == sequential[job]["label"]
                        assert parallel[job]["model"] == job[1]
                        assert parallel[job]["probabilities"] == pytest.approx(sequential[job]["probabilities"],
                                                                               abs=1e-6)
        assert store.max_parallel == max_parallel


# ---- the command line ------------------------------------------------------------------------------

def _start_cli(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "image_classifier.cli", "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    proc.kill()
    raise AssertionError(f"no {pattern!r} in output: {''.join(seen)} / {proc.stderr.read()}")


@pytest.mark.slow
def test_cli_serves_a_run_and_stops_cleanly(run_dir):
    proc = _start_cli([str(run_dir), "--port", "0", "--threads", "2"])
    try:
        url = _read_until(proc, r"(http://127\.0\.0\.1:\d+/)").group(1)
        _read_until(proc, r"ready: 2 model\(s\) loaded .* default tiny_b")
        with urllib.request.urlopen(url + "api/health", timeout=10) as resp:
            assert json.loads(resp.read())["status"] == "ready"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.headers["Server"] == "image-classifier"  # waitress, not Werkzeug's dev server
            assert b"<title>image-classifier</title>" in resp.read()
        status, raw = _post(url + "api/predict", encode(colour_image(COLOURS[BLUE], seed=9)))
        assert status == 200 and json.loads(raw)["label"] == BLUE
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, (proc.returncode, proc.stdout.read(), proc.stderr.read())


@pytest.mark.slow
def test_cli_stopped_under_load_exits_cleanly(run_dir):
    """Ctrl+C while requests are being answered: the forward passes under way finish and the
    process exits 0. (Before the inference threads were joined, a thread still inside torch when
    Python finalized aborted the process with SIGABRT in about one stop in four.)"""
    # A photo-sized upload keeps each request busy in decoding and resizing, as real uploads do.
    image = encode(colour_image(COLOURS[RED], size=(1600, 1200), seed=11))
    for attempt in range(3):
        proc = _start_cli([str(run_dir), "--port", "0", "--threads", "4"])
        stop = threading.Event()
        answers: list[int] = []

        def hammer(url: str, stop: threading.Event, answers: list[int]) -> None:
            while not stop.is_set():
                try:
                    answers.append(_post(url + "api/predict", image, timeout=10)[0])
                except OSError:  # refused or reset once the server has stopped
                    return

        try:
            url = _read_until(proc, r"(http://127\.0\.0\.1:\d+/)").group(1)
            _read_until(proc, r"ready: 2 model\(s\) loaded")
            clients = [threading.Thread(target=hammer, args=(url, stop, answers), daemon=True) for _ in range(4)]
            for c in clients:
                c.start()
            wait_until(lambda: len(answers) >= 8, timeout=120, what="8 answers from the server under load")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, (attempt, proc.returncode, err[-2000:])
        assert "stopped" in out and "Traceback" not in err
        # Requests caught by the stop are refused with a clear status, never a 500.
        assert set(answers) <= {200, 503}, set(answers)


def _start_cli_with_sigint_ignored(args: list[str], drain_seconds: float | None = None) -> subprocess.Popen:
    """``serve`` started as a background job of a non-interactive shell starts it (``cmd &`` in a
    script, or the whole test suite run that way): with SIGINT ignored, which exec keeps.
    ``drain_seconds``: how long the stop waits for requests in flight (serve's own is 8 s)."""
    serve = "import sys; from image_classifier.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"
    if drain_seconds is not None:
        serve = (f"import image_classifier.serve.server as s; "
                 f"s.serve_until.__kwdefaults__['drain_seconds'] = {drain_seconds!r}; {serve}")
    wrapper = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
               f"os.execv(sys.executable, [sys.executable, '-c', {serve!r}, *sys.argv[1:]])")
    return subprocess.Popen([sys.executable, "-c", wrapper, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _start_upload(url: str, body: bytes) -> "socket.socket":
    """A request in flight: headers and half the body sent, the rest still to come."""
    import socket

    host, port = url.split("//")[1].strip("/").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    sock.sendall(head + body[:len(body) // 2])
    return sock


def _finish_upload(sock: "socket.socket", body: bytes) -> tuple[int, dict]:
    try:
        sock.sendall(body[len(body) // 2:])
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())
    finally:
        sock.close()


def _refuses_connections(url: str) -> bool:
    host, port = url.split("//")[1].strip("/").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except ConnectionRefusedError:
        return True
    return False


def _read_by_server(url: str, socks: list[socket.socket]) -> bool:
    """Whether the server has accepted each of these connections and read all that was sent on
    it so far: in the kernel's table of TCP sockets (Linux's /proc/net/tcp), the server's end of
    each has a socket inode (a connection not yet accepted has none) and an empty receive queue."""
    table = Path("/proc/net/tcp")
    if not table.is_file():
        pytest.skip("needs Linux's /proc/net/tcp to see what the server has read")
    server_port = int(url.split("//")[1].strip("/").rsplit(":", 1)[1])
    clients = {sock.getsockname()[1] for sock in socks}
    read = set()
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
        rx_queue, inode = int(fields[4].split(":")[1], 16), int(fields[9])
        if local_port == server_port and remote_port in clients and inode != 0 and rx_queue == 0:
            read.add(remote_port)
    return read == clients


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_started_with_sigint_ignored_stops_cleanly_on_sigint_and_sigterm(run_dir, signum):
    """``serve`` installs its own SIGINT and SIGTERM handlers (a process started with SIGINT ignored
    used to ignore Ctrl+C and ``kill -INT``), and either signal stops it cleanly: it stops taking
    connections at once, answers the requests in flight (here, uploads half sent when the signal
    comes), and exits 0."""
    images = {label: encode(colour_image(rgb, size=(400, 300), seed=30 + i))
              for i, (label, rgb) in enumerate(COLOURS.items())}
    proc = _start_cli_with_sigint_ignored([str(run_dir), "--port", "0", "--threads", "2"])
    try:
        url = _read_until(proc, r"(http://127\.0\.0\.1:\d+/)").group(1)
        _read_until(proc, r"ready: 2 model\(s\) loaded")
        uploads = {label: _start_upload(url, data) for label, data in images.items()}
        wait_until(lambda: _read_by_server(url, list(uploads.values())),
                   what="the server accepting the uploads and reading their first halves")
        proc.send_signal(signum)
        # New clients are refused while the requests in flight cannot have been answered yet
        # (their second halves are not sent): it stopped listening first.
        wait_until(lambda: _refuses_connections(url), timeout=60, what="the server refusing new connections")
        assert proc.poll() is None, "exited without answering the requests in flight"
        for label, sock in uploads.items():
            status, body = _finish_upload(sock, images[label])
            assert status == 200 and body["label"] == label, (status, body)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (proc.returncode, err[-2000:])
    assert "stopped" in out and "Traceback" not in err


@pytest.mark.slow
def test_cli_second_signal_stops_without_waiting_for_a_stalled_upload(run_dir):
    """A client that stalls half-way through its upload holds the stop for at most the drain time;
    a second signal (Ctrl+C again) stops without waiting for it. Here the drain time is an hour:
    only the second signal can end the process while the test waits."""
    proc = _start_cli_with_sigint_ignored([str(run_dir), "--port", "0", "--threads", "2", "--models", "tiny_a"],
                                          drain_seconds=3600)
    stalled = None
    try:
        url = _read_until(proc, r"(http://127\.0\.0\.1:\d+/)").group(1)
        _read_until(proc, r"ready: 1 model\(s\) loaded")
        stalled = _start_upload(url, red_jpeg())
        wait_until(lambda: _read_by_server(url, [stalled]), what="the server reading the upload's first half")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: _refuses_connections(url), timeout=60, what="the server refusing new connections")
        assert proc.poll() is None  # waiting for the stalled upload
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)  # the drain alone would take an hour
    finally:
        if stalled is not None:
            stalled.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (proc.returncode, err[-2000:])
    assert "1 request(s) unanswered" in err and "stopped" in out and "Traceback" not in err


@pytest.mark.slow
def test_cli_rejects_a_wrong_path_with_a_message(tmp_path):
    proc = _start_cli([str(tmp_path / "nothing"), "--port", "0"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_rejects_a_busy_port(run_dir):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = _start_cli([str(run_dir), "--port", str(port)])
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "already in use" in err and "Traceback" not in err


# ---- the inference threads' batching ---------------------------------------------------------------

def test_requests_waiting_together_are_batched_with_unchanged_answers(store):
    """While the only inference thread is busy, five more requests queue up; they then run as one
    batch, and each gets the probabilities it gets alone."""
    from image_classifier.serve.batcher import InferenceWorkers

    clf = store.get("tiny_a").classifier
    images = [colour_image(rgb, seed=200 + i) for i, rgb in enumerate(list(COLOURS.values()) * 2)]
    tensors = [clf.preprocess([im]) for im in images]
    alone = [clf.predict_tensor(t)[0] for t in tensors]

    release = threading.Event()
    started = threading.Event()
    sizes: list[int] = []

    def run(batch):
        sizes.append(batch.shape[0])
        if len(sizes) == 1:  # hold the first batch until the others are queued
            started.set()
            assert release.wait(10)
        return clf.predict_tensor(batch)

    workers = InferenceWorkers(workers=1, max_batch=8)
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            first = pool.submit(workers.submit, "tiny_a", run, tensors[0])
            assert started.wait(10)
            rest = [pool.submit(workers.submit, "tiny_a", run, t) for t in tensors[1:]]
            wait_until(lambda: workers._queue.qsize() == len(rest), what="the other requests queued")
            release.set()
            results = [first.result(10)] + [f.result(10) for f in rest]
    finally:
        workers.close()
    assert sizes == [1, len(rest)]
    assert [r.batch_size for r in results] == [1] + [len(rest)] * len(rest)
    for got, want in zip(results, alone):
        assert got.probabilities == pytest.approx(want, abs=1e-5)
    assert all(r.queue_ms >= 0 and r.forward_ms > 0 for r in results)


def test_batches_never_mix_models_and_errors_reach_every_waiting_request():
    import numpy as np

    from image_classifier.serve.batcher import InferenceWorkers
    import torch

    seen: list[tuple[str, int]] = []
    gate = threading.Event()

    def runner(key):
        def run(batch):
            seen.append((key, batch.shape[0]))
            gate.wait(10)
            if key == "broken":
                raise RuntimeError("forward failed")
            return np.full((batch.shape[0], 2), 0.5, dtype=np.float32)
        return run

    workers = InferenceWorkers(workers=1, max_batch=8)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(workers.submit, "a", runner("a"), torch.zeros(1, 3, 8, 8))]
            wait_until(lambda: len(seen) == 1, what="the first batch running")
            keys = ["a", "b", "a", "broken", "b", "broken"]
            futures += [pool.submit(workers.submit, k, runner(k), torch.zeros(1, 3, 8, 8)) for k in keys]
            wait_until(lambda: workers._queue.qsize() == len(keys), what="the other requests queued")
            gate.set()
            outcomes = []
            for f in futures:
                try:
                    outcomes.append(f.result(10).batch_size)
                except RuntimeError as err:
                    outcomes.append(str(err))
    finally:
        workers.close()
    assert sorted(seen) == sorted([("a", 1), ("a", 2), ("b", 2), ("broken", 2)])
    assert outcomes == [1, 2, 2, 2, "forward failed", 2, "forward failed"]


def test_closing_the_workers_finishes_running_passes_and_fails_waiting_ones():
    import numpy as np
    import torch

    from image_classifier.serve.batcher import InferenceWorkers, WorkersClosedError

    running = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def slow(batch):
        running.set()
        assert release.wait(30)
        order.append("forward pass returned")
        return np.ones((batch.shape[0], 2), dtype=np.float32)

    def close() -> None:
        workers.close()
        order.append("close returned")

    workers = InferenceWorkers(workers=1, max_batch=1)
    with ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(workers.submit, "a", slow, torch.zeros(1, 3, 4, 4))
        assert running.wait(10)
        waiting = pool.submit(workers.submit, "b", slow, torch.zeros(1, 3, 4, 4))
        wait_until(lambda: workers._queue.qsize() == 1, what="the second request queued")
        closer = pool.submit(close)
        wait_until(lambda: workers._closed, what="close() called")
        release.set()
        closer.result(30)
        # close() waited for the forward passes under way and queued before it ("a", then "b").
        assert order == ["forward pass returned", "forward pass returned", "close returned"]
        assert first.result(10).batch_size == 1
        # "b" was queued before close(), so it ran too; nothing is lost that was accepted.
        assert waiting.result(10).batch_size == 1
    assert not any(t.is_alive() for t in workers._threads)
    with pytest.raises(WorkersClosedError, match="stopping"):
        workers.submit("a", slow, torch.zeros(1, 3, 4, 4))
    workers.close()  # a second close is harmless


def test_a_closed_store_answers_503_stopping(run_dir):
    store = ModelStore.from_paths([run_dir], only=["tiny_a"]).load()
    api = create_app(store).test_client()
    data = encode(colour_image(COLOURS[RED], seed=3))
    assert api.post("/api/predict", data=data, content_type="image/jpeg").status_code == 200
    store.close()
    r = api.post("/api/predict", data=data, content_type="image/jpeg")
    assert r.status_code == 503 and "stopping" in r.get_json()["error"]
    health = api.get("/api/health")
    assert health.status_code == 503 and health.get_json()["status"] == "stopping"
    assert store.load() is store and not store.ready  # a closed store loads nothing more


@pytest.mark.slow
def test_cli_stops_on_sigterm_and_exits_2_when_the_weights_cannot_load(tmp_path, run_dir):
    import shutil

    proc = _start_cli([str(run_dir), "--port", "0", "--models", "tiny_a"])
    try:
        _read_until(proc, r"ready: 1 model\(s\) loaded .* default tiny_a")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr.read()

    broken = tmp_path / "broken"
    shutil.copytree(run_dir / "models" / "tiny_a", broken)
    (broken / "weights.safetensors").write_bytes(b"\x00" * 64)
    proc = _start_cli([str(broken), "--port", "0"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert "cannot load the models" in err and "weights" in err and "Traceback" not in err
