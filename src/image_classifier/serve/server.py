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


def make_server(app: Any, *, host: str = "127.0.0.1", port: int = 5000, threads: int = 4,
                max_upload_bytes: int) -> Any:
    """A waitress server bound to ``host:port`` (port 0: any free port), not yet running."""
    from waitress.server import create_server

    # Bodies up to twice the limit reach the app, which answers a JSON 413; beyond that waitress
    # refuses them from the Content-Length header alone, before reading them. Bodies are buffered
    # in memory, not in temporary files (inbuf_overflow), so no upload is ever written to disk.
    max_body = 2 * (max_upload_bytes + MULTIPART_SLACK_BYTES)
    try:
        return create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="image-classifier",
            max_request_body_size=max_body,
            inbuf_overflow=max_body,
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
                 max_upload_bytes: int) -> None:
        self.server = make_server(app, host=host, port=port, threads=threads, max_upload_bytes=max_upload_bytes)
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
