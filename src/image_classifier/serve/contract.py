"""The server's contract with its clients, shared by the app, the server and the OpenAPI document
(kept apart so that none of the three imports another for it): error kinds and body-size bounds."""
from __future__ import annotations

# Room for the multipart envelope (boundaries, part headers, the small form fields) so that a file
# of exactly the limit still fits; the file itself is checked against the limit separately.
MULTIPART_SLACK_BYTES = 64 * 1024

# Every error's machine-readable ``kind`` and what it means (documented in the OpenAPI document, in
# this order). Clients branch on the kind, never on the message, which may be reworded.
ERROR_KINDS: dict[str, str] = {
    "bad_request": "The request is malformed (a broken multipart body, say).",
    "no_file": "A multipart upload without the field `file`.",
    "empty": "The upload is empty.",
    "corrupt": "The image cannot be decoded (truncated or corrupt).",
    "io": "The image could not be read.",
    "unsupported": "Not an image in a supported format or colour mode (text, PDF, HEIC, SVG, ...).",
    "too_large": "The body is over the upload limit, or the image has more pixels than the "
                 "decompression-bomb limit.",
    "bad_parameter": "A malformed parameter (`top_k` not a whole number >= 1).",
    "unknown_model": "No model of that name is served (GET /api/models lists them).",
    "not_found": "No such URL.",
    "method_not_allowed": "The URL exists, not with this method (the `Allow` header lists the methods).",
    "not_ready": "The models are still loading: retry after `Retry-After` seconds.",
    "load_failed": "Loading the models failed: the operator must fix the model files and restart.",
    "stopping": "The server is stopping.",
    "internal": "An unexpected error in the server, logged for the operator.",
}


# Waitress reads (and the app then discards) bodies up to this bound, so that clients which send
# the whole body before reading the answer (urllib, requests) get the app's JSON 413 instead of a
# reset connection. Larger bodies are refused by waitress from the Content-Length header, unread,
# with its plain-text 413 (and such a client sees a reset). 256 MB, or 4 times the upload limit
# when that is larger: generous for a mistaken upload (a video, a RAW file), and bounded on disk.
MIN_BODY_BOUND_BYTES = 256 * 1024 * 1024
BODY_BOUND_FACTOR = 4


def max_request_body_bytes(max_upload_bytes: int) -> int:
    """The largest body waitress reads (bodies of this many bytes or more it refuses unread)."""
    return max(MIN_BODY_BOUND_BYTES, BODY_BOUND_FACTOR * (max_upload_bytes + MULTIPART_SLACK_BYTES))
