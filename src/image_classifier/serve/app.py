"""The web app: one page to try the models, and a JSON API (Flask application factory).

``create_app`` takes model paths (or an already built :class:`ModelStore`) and returns a Flask
app; a production WSGI server (waitress, see ``image-classifier serve``) runs it, never Flask's
debug server. Tests use the same factory with Flask's test client.

The page speaks the language of ``?lang=``, else the browser's ``Accept-Language``, else
``create_app(lang=...)`` (``serve --lang``); the JSON API is the same in every language.

Every answer that is not a 2xx, on any URL, is ``{"error": "...", "kind": "..."}``: a message for a
person and a machine-readable kind (``contract.ERROR_KINDS``), with a status that says whose fault it is (see
``openapi.py``); no input can produce a 500 or a stack trace. Uploads never touch the disk:
multipart files are parsed into memory (the upload limit bounds them) and decoded from bytes.
(Only a body over the limit, which the app refuses from its length without reading it, is
spooled to a temporary file by waitress: see ``server.py``.)
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence

from flask import Flask, Request, Response, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from image_classifier.errors import OptionError, UnreadableImageError
from image_classifier.i18n import DEFAULT as DEFAULT_LANG, LANGUAGE_NAMES, SUPPORTED as LANGUAGES
from image_classifier.i18n import negotiate, translator
from image_classifier.optionspec import check_keep
from image_classifier.serve.contract import ERROR_KINDS, MULTIPART_SLACK_BYTES
from image_classifier.serve.openapi import openapi_document
from image_classifier.serve.store import ModelStore, NotReadyError, UnknownModelError
from image_classifier.version import __version__

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_TOP_K = 5

# No external source of any kind: the page is self-contained (the machine and its users may be
# offline) and nothing can be injected from elsewhere. Previews are blob: URLs of the user's file.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


# Werkzeug's own errors (routing, body limits, malformed forms) by status; any other 4xx is a
# bad request and any other 5xx an internal error.
_KIND_FOR_HTTP_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                         415: "unsupported"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}: add it to ERROR_KINDS")
        self.status = status
        self.message = message
        self.kind = kind


def error_response(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
    """The one shape of every error answer."""
    response = jsonify(error=message, kind=kind)
    response.status_code = status
    response.headers.update(headers or {})
    return response


class InMemoryRequest(Request):
    """A request whose multipart files stay in memory (Werkzeug spools big ones to temp files)."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):  # noqa: ANN001
        return io.BytesIO()


# Whose fault an unreadable upload is, by the data layer's kind of problem: 413 over a size or pixel
# limit (a decompression bomb, say); 415 not an image in a supported format or colour mode (text,
# PDF, HEIC, SVG, ...); 400 an image that cannot be decoded (truncated, corrupt) or an empty body.
_STATUS_FOR_UNREADABLE = {"too_large": 413, "unsupported": 415}


def _parse_top_k(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(422, f"top_k must be a whole number >= 1, not {raw[:40]!r}", "bad_parameter") from None
    if value < 1:
        raise ApiError(422, f"top_k must be >= 1, not {value}", "bad_parameter")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _parse_flag(name: str, raw: str | None) -> bool:
    """A yes/no parameter (``?explain=1``); anything but the usual spellings is a 422."""
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApiError(422, f"{name} must be 1 or 0 (true or false), not {raw[:40]!r}", "bad_parameter")


def _parse_keep(raw: str | None) -> float | None:
    """``?keep=``: the share of known photos the "none of these" threshold keeps, or None."""
    if raw is None or raw.strip() == "":
        return None
    try:
        return check_keep(raw.strip())
    except OptionError:  # checked as --keep is; said for a query parameter
        raise ApiError(422, f"keep must be a fraction between 0 and 1 (exclusive), e.g. 0.9, not {raw[:40]!r}",
                       "bad_parameter") from None


def _read_upload(max_bytes: int) -> tuple[bytes, dict[str, str]]:
    """The uploaded bytes and the form fields, from multipart (field ``file``) or the raw body."""
    length = request.content_length
    if request.mimetype == "multipart/form-data":
        if length is not None and length > max_bytes + MULTIPART_SLACK_BYTES:
            raise ApiError(413, _too_large(max_bytes), "too_large")
        upload = request.files.get("file")
        fields = {k: v for k, v in request.form.items() if k in ("model", "top_k", "explain", "keep")}
        if upload is None:
            raise ApiError(400, "no file: send the image as the multipart field 'file' (or as the raw request body)",
                           "no_file")
        data = upload.stream.read(max_bytes + 1)
    else:
        # Any other content type (image/*, application/octet-stream, or curl --data-binary's default
        # x-www-form-urlencoded) is the raw image: never parse it as a form.
        if length is not None and length > max_bytes:
            raise ApiError(413, _too_large(max_bytes), "too_large")
        data = request.get_data(cache=False)
        fields = {}
    if len(data) > max_bytes:
        raise ApiError(413, _too_large(max_bytes), "too_large")
    if not data:
        raise ApiError(400, "empty upload: no image data was received", "empty")
    return data, fields


def _too_large(max_bytes: int) -> str:
    return f"file too large: the limit is {max_bytes / 1024 / 1024:g} MB per image"


def _not_ready(store: ModelStore) -> tuple[str, str]:
    """Why the store cannot answer: (message, kind)."""
    if store.closed:
        return "the server is stopping", "stopping"
    if store.error:
        return f"loading the models failed: {store.error}", "load_failed"
    return "models are still loading", "not_ready"


def _not_ready_response(store: ModelStore, message: str | None = None) -> Response:
    default_message, kind = _not_ready(store)
    # Retrying helps while loading or stopping (a restart, another replica), not after a failed load.
    headers = {} if kind == "load_failed" else {"Retry-After": "1"}
    return error_response(503, message or default_message, kind, headers)


def create_app(models: ModelStore | Sequence[str | os.PathLike] | str | os.PathLike, *,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, backend: str = "torch",
               only: Sequence[str] | None = None, load: bool = True, lang: str = DEFAULT_LANG,
               reject: bool = True, device: str = "cpu", keep: float | None = None) -> Flask:
    """Build the app for ``models``: a :class:`ModelStore`, or paths of model/run directories.

    ``lang`` is the page's language for a browser that asks for none of :data:`LANGUAGES`.
    ``reject=False`` (``serve --no-reject``) never answers "unknown" (given paths; a store has its own).
    ``device`` (``serve --device``: auto, cpu, cuda, cuda:N) is where the networks compute (given
    paths; a store has its own); the page and the API are the same on every device. ``keep``
    (``serve --keep``): each model's "none of these" threshold moved to keep this share of its known
    validation photos (given paths; a request's ``?keep=`` overrides it).

    Given paths, the models are loaded here unless ``load=False`` (then call ``store.load()`` or
    ``store.start_loading()``; /api/health answers 503 until they are in). The store is
    ``app.extensions["image_classifier"]``.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}: choose from {', '.join(LANGUAGES)}")
    if isinstance(models, ModelStore):
        store = models
    else:
        paths = [models] if isinstance(models, (str, os.PathLike)) else list(models)
        store = ModelStore.from_paths(paths, only=only, backend=backend, reject=reject, device=device, keep=keep)
    if load:
        store.load()
    if max_upload_bytes < 1:
        raise ValueError("max_upload_bytes must be positive")

    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config.update(
        MAX_CONTENT_LENGTH=max_upload_bytes + MULTIPART_SLACK_BYTES,
        # Caps the text fields (model, top_k) and the parser's look-ahead buffer (64 KiB reads).
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        MAX_FORM_PARTS=16,
        JSON_SORT_KEYS=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.json.sort_keys = False
    app.extensions["image_classifier"] = store

    @app.after_request
    def security_headers(response):  # noqa: ANN001, ANN202
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(ApiError)
    def api_error(err: ApiError):  # noqa: ANN202
        return error_response(err.status, err.message, err.kind)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):  # noqa: ANN202
        # Routing (404, 405), Werkzeug's body limits (413) and form parsing (400), on every URL,
        # static files included: JSON like every other error, never Werkzeug's HTML page.
        code = err.code or 500
        kind = _KIND_FOR_HTTP_STATUS.get(code, "bad_request" if code < 500 else "internal")
        headers = {}
        if code == 413:  # body over the limit, or a multipart form with too many parts
            message = _too_large(max_upload_bytes)
        elif code == 404:
            message = f"not found: {request.path[:200]}"
        elif code == 405:
            allowed = ", ".join(err.valid_methods or [])
            message = f"method {request.method} not allowed on {request.path[:200]}: use {allowed}"
            headers["Allow"] = allowed
        else:
            message = err.description or err.name
        return error_response(code, message, kind, headers)

    @app.errorhandler(Exception)
    def unexpected(err: Exception):  # noqa: ANN202
        # Logged in full for the operator; the client gets no internals.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error: the server could not answer this request", "internal")

    @app.get("/")
    def index():  # noqa: ANN202
        page_lang = negotiate(request.args.get("lang"), request.headers.get("Accept-Language"), lang)
        t = translator(page_lang)
        # The script gets its strings from here (a data attribute: the CSP allows no inline script),
        # so the page has one source of text per language.
        page = render_template("index.html", version=__version__, lang=page_lang, t=t, messages=t.subset("page."),
                               decimal=t.decimal, languages=LANGUAGE_NAMES)
        response = make_response(page)
        response.headers["Content-Language"] = page_lang
        response.vary.add("Accept-Language")  # caches must not hand one language's page to another
        return response

    @app.get("/api/health")
    def health():  # noqa: ANN202
        if store.ready:
            return jsonify(status="ready", models=store.names, default=store.default)
        # Not ready is a 503 like any error: with `error` and `kind` besides the status.
        message, kind = _not_ready(store)
        status = {"load_failed": "failed", "stopping": "stopping"}.get(kind, "loading")
        headers = {"Retry-After": "1"} if kind == "not_ready" else {}
        return jsonify(status=status, error=message, kind=kind), 503, headers

    @app.get("/api/models")
    def models_list():  # noqa: ANN202
        if not store.ready:
            return _not_ready_response(store)
        return jsonify(
            default=store.default,
            models=store.models_info(),
            limits={"max_upload_bytes": max_upload_bytes, "max_pixels": store.max_pixels},
        )

    @app.post("/api/predict")
    def predict():  # noqa: ANN202
        data, fields = _read_upload(max_upload_bytes)
        model = fields.get("model", request.args.get("model"))
        top_k = _parse_top_k(fields.get("top_k", request.args.get("top_k")), DEFAULT_TOP_K)
        explain = _parse_flag("explain", fields.get("explain", request.args.get("explain")))
        keep = _parse_keep(fields.get("keep", request.args.get("keep")))
        try:
            result = store.predict_bytes(data, model=model or None, top_k=top_k, explain=explain, keep=keep)
        except UnknownModelError as err:
            raise ApiError(422, str(err), "unknown_model") from None
        except OptionError as err:  # ?keep= for a model without a rule
            raise ApiError(422, str(err), "bad_parameter") from None
        except NotReadyError as err:
            return _not_ready_response(store, str(err))
        except UnreadableImageError as err:
            raise ApiError(_STATUS_FOR_UNREADABLE.get(err.kind, 400), err.reason, err.kind) from None
        return jsonify(result.to_dict())

    @app.get("/api/openapi.json")
    def openapi():  # noqa: ANN202
        return jsonify(openapi_document(store, max_upload_bytes=max_upload_bytes))

    return app
