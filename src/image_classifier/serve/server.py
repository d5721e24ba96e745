"""Running the app on waitress (a production WSGI server), in the foreground or in a thread.

Used by ``image-classifier serve``, by the tests and by ``bench/serve_load.py`` so that all three
run the same server with the same settings.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from image_classifier.errors import ImageClassifierError
from image_classifier.serve.app import MULTIPART_SLACK_BYTES

log = logging.getLogger(__name__)

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


def make_server(app: Any, *, host: str = "127.0.0.1", port: int = 5000, threads: int = 4,
                max_upload_bytes: int, max_body_bytes: int | None = None) -> Any:
    """A waitress server bound to ``host:port`` (port 0: any free port), not yet running.

    ``max_body_bytes`` (default: ``max_request_body_bytes(max_upload_bytes)``) is the bound of the
    bodies waitress reads; it must be above the upload limit.
    """
    from waitress.server import create_server

    accepted = max_upload_bytes + MULTIPART_SLACK_BYTES  # the largest body the app may accept
    max_body = max_body_bytes or max_request_body_bytes(max_upload_bytes)
    if max_body <= accepted:
        raise ValueError(f"max_body_bytes ({max_body}) must be above the upload limit with its "
                         f"multipart slack ({accepted})")
    try:
        return create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="image-classifier",
            max_request_body_size=max_body,
            # A body the app can accept stays in memory, so an upload is never written to disk; a
            # larger one, which the app refuses from its length without reading it, is spooled by
            # waitress to an anonymous temporary file past this size rather than held in memory.
            inbuf_overflow=accepted + 1,
            clear_untrusted_proxy_headers=True,
            channel_timeout=60,
        )
    except OSError as err:
        if err.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise ImageClassifierError(f"port {port} on {host} is already in use: stop the other server or "
                                       "choose another port with --port") from None
        raise ImageClassifierError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def server_urls(server: Any) -> list[str]:
    listen = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    urls = []
    for host, port in listen:
        shown = f"[{host}]" if ":" in str(host) else host
        urls.append(f"http://{shown}:{port}/")
    return urls


class BackgroundServer:
    """A waitress server in a daemon thread; ``with BackgroundServer(app, ...) as s: s.url``."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, threads: int = 4,
                 max_upload_bytes: int, max_body_bytes: int | None = None) -> None:
        self.server = make_server(app, host=host, port=port, threads=threads, max_upload_bytes=max_upload_bytes,
                                  max_body_bytes=max_body_bytes)
        self.url = server_urls(self.server)[0].rstrip("/")
        self._thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.close()
        self._thread.join(timeout=5)
