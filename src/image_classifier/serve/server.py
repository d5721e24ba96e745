"""Running the app on waitress (a production WSGI server), in the foreground or in a thread.

Used by ``image-classifier serve``, by the tests and by ``bench/serve_load.py`` so that all three
run the same server with the same settings, and the same graceful stop (``serve_until``).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

from image_classifier.errors import ImageClassifierError
from image_classifier.serve.contract import MULTIPART_SLACK_BYTES, max_request_body_bytes

log = logging.getLogger(__name__)

# How long a stop waits for the requests in flight (docker stop and many service managers send
# SIGKILL 10 s after SIGTERM; a request that is still uploading after that is dropped).
DRAIN_SECONDS = 8.0
# How often the serving loop looks at its stop flag: the longest a stop waits to begin. Signal
# handlers only set the flag (raising from one could interrupt waitress half-way through reading
# a request), so the loop must wake up by itself to see it.
POLL_SECONDS = 0.2

def make_server(app: Any, *, host: str = "127.0.0.1", port: int = 5000, threads: int = 4,
                max_upload_bytes: int, max_body_bytes: int | None = None) -> Any:
    """A waitress server bound to ``host:port`` (port 0: any free port), not yet running.

    ``max_body_bytes`` (default: ``max_request_body_bytes(max_upload_bytes)``) is the bound of the
    bodies waitress reads; it must be above the upload limit.
    """
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
    return [f"http://[{host}]:{port}/" if ":" in str(host) else f"http://{host}:{port}/" for host, port in listen]


def serve_until(server: Any, stop: threading.Event, *, hurry: threading.Event | None = None,
                drain_seconds: float = DRAIN_SECONDS) -> bool:
    """Run ``server`` until ``stop`` is set, then stop gracefully and close it.

    The graceful stop: stop taking connections at once (new clients are refused), let every
    request in flight finish (being received, queued, answered or still being sent), closing
    each idle connection, for up to ``drain_seconds`` or until ``hurry`` is set; then close
    everything. Returns True when no request was left unanswered. (waitress' own ``run`` stops
    on KeyboardInterrupt and drops the requests being received or queued.)
    """
    socket_map = _socket_map(server)
    try:
        while not stop.is_set():
            _loop_once(server, socket_map)
        in_flight = _requests_in_flight(socket_map)
        log.info("stopping: no new connections; finishing %d request(s) in flight (at most %g s)",
                 in_flight, drain_seconds)
        _stop_listening(socket_map)
        deadline = time.monotonic() + drain_seconds
        while in_flight and time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
            _close_idle_channels(socket_map)
            _loop_once(server, socket_map)
            in_flight = _requests_in_flight(socket_map)
        if in_flight:
            log.warning("stopping with %d request(s) unanswered", in_flight)
        return not in_flight
    finally:
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
        wasyncore.close_all(socket_map)


def _socket_map(server: Any) -> dict:
    # One listening socket: the server is the dispatcher (map in ``_map``); several (a host name
    # with IPv4 and IPv6 addresses): a MultiSocketServer holding them (in ``map``).
    socket_map = getattr(server, "map", None)
    return socket_map if socket_map is not None else server._map


def _loop_once(server: Any, socket_map: dict) -> None:
    wasyncore.loop(timeout=POLL_SECONDS, map=socket_map, use_poll=server.adj.asyncore_use_poll, count=1)


def _channels(socket_map: dict) -> list[Any]:
    return [d for d in list(socket_map.values()) if isinstance(d, HTTPChannel)]


def _busy(channel: Any) -> bool:
    # A request partly received (``request``), queued or being answered (``requests``), or an
    # answer not yet sent (``total_outbufs_len``).
    return bool(channel.request is not None or channel.requests or channel.total_outbufs_len)


def _requests_in_flight(socket_map: dict) -> int:
    return sum(1 for channel in _channels(socket_map) if _busy(channel))


def _stop_listening(socket_map: dict) -> None:
    for dispatcher in list(socket_map.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            # The listening socket only: BaseWSGIServer.close would also close the trigger that
            # the task threads use to wake this loop up when an answer is ready to send.
            wasyncore.dispatcher.close(dispatcher)


def _close_idle_channels(socket_map: dict) -> None:
    # A keep-alive connection between requests: closed, so that its client cannot keep the
    # server busy with new requests (one that races this close sees its connection closed).
    for channel in _channels(socket_map):
        if not _busy(channel):
            channel.handle_close()


class BackgroundServer:
    """A waitress server in a daemon thread; ``with BackgroundServer(app, ...) as s: s.url``.

    Closing it stops it as ``image-classifier serve`` stops on a signal (``serve_until``).
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, threads: int = 4,
                 max_upload_bytes: int, max_body_bytes: int | None = None,
                 drain_seconds: float = DRAIN_SECONDS) -> None:
        self.server = make_server(app, host=host, port=port, threads=threads, max_upload_bytes=max_upload_bytes,
                                  max_body_bytes=max_body_bytes)
        self.url = server_urls(self.server)[0].rstrip("/")
        self.drained: bool | None = None  # after close(): whether every request in flight was answered
        self._stop = threading.Event()
        self._drain_seconds = drain_seconds
        self._thread = threading.Thread(target=self._run, name="waitress", daemon=True)

    def _run(self) -> None:
        self.drained = serve_until(self.server, self._stop, drain_seconds=self._drain_seconds)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._drain_seconds + 5)
