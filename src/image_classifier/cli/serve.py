"""``image-classifier serve PATH``: the web page and JSON API on a production WSGI server (waitress)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from image_classifier.cli.options import resolve_device_option
from image_classifier.optionspec import add_arguments, from_args
from image_classifier.serve.options import LOCAL_HOSTS, ServeOptions


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="serve a web page and JSON API that classify uploaded photos",
        description=(
            "Serve a saved model, or every model of a run directory (runs/NAME, from `image-classifier "
            "compare`; its best model answers by default), as a web page and a JSON API "
            "(POST /api/predict, GET /api/models, GET /api/health, GET /api/openapi.json)."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="a saved model directory or a runs/NAME directory")
    add_arguments(p, ServeOptions)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    # Lazy (see image_classifier.cli): the server loads Flask, waitress and torch.
    from image_classifier import runtime
    from image_classifier.inference.rejection import describe_tradeoff
    from image_classifier.serve.app import create_app
    from image_classifier.serve.server import make_server, serve_until, server_urls
    from image_classifier.serve.store import ModelStore

    options = from_args(ServeOptions, args)  # a bad option (--keep with --no-reject, --port 70000): exit 2, no server
    device = resolve_device_option(options.device, options.backend)  # so is --device cuda without a GPU
    runtime.configure(num_threads=options.torch_threads)
    # Reads only the model cards: a wrong path fails here, before the server starts.
    store = ModelStore.from_paths(args.paths, only=list(options.models) if options.models else None,
                                  backend=options.backend, reject=options.reject, device=device, keep=options.keep,
                                  **({"max_batch": options.max_batch} if options.max_batch else {}))
    app = create_app(store, max_upload_bytes=options.max_upload_bytes, load=False, lang=options.lang)
    server = make_server(app, host=options.host, port=options.port, threads=options.threads,
                         max_upload_bytes=options.max_upload_bytes)

    for url in server_urls(server):
        print(f"image-classifier: serving {', '.join(store.names)} on {url}  (Ctrl+C to stop)", flush=True)
    if options.host not in LOCAL_HOSTS:
        print(f"image-classifier: warning: listening on {options.host}: other machines on the network can use this "
              "server (it has no login)", file=sys.stderr, flush=True)

    failed = threading.Event()
    stop = threading.Event()
    hurry = threading.Event()

    def load() -> None:
        try:
            store.load()
        except Exception as err:  # noqa: BLE001 - reported to the user, then the server stops
            print(f"image-classifier serve: error: cannot load the models: {err}", file=sys.stderr, flush=True)
            failed.set()
            stop.set()  # the serving loop, in the main thread, sees it and stops the server
            return
        if not store.ready:  # stopped while loading
            return
        print(f"image-classifier: ready: {len(store.names)} model(s) loaded in {store.load_seconds:.1f} s; "
              f"default {store.default}; computing on {store.device}", flush=True)
        for name, trade in store.tradeoffs().items():
            print(f"image-classifier: {name}: none of these: {describe_tradeoff(trade)}", flush=True)

    _install_stop_handlers(stop, hurry)
    threading.Thread(target=load, name="model-loader", daemon=True).start()
    try:
        serve_until(server, stop, hurry=hurry)  # returns once stopped: requests in flight answered
    finally:
        if not store.ready and not failed.is_set():
            print("image-classifier: stopping after the model being loaded", flush=True)
        store.close()  # joins the inference threads: none may be inside torch when Python exits
    if failed.is_set():
        return 2
    print("image-classifier: stopped", flush=True)
    return 0


def _install_stop_handlers(stop: threading.Event, hurry: threading.Event) -> None:
    """SIGINT (Ctrl+C) and SIGTERM (`kill`, service managers, `docker stop`) stop the server cleanly.

    Installed for both even when SIGINT was ignored at start-up, as it is for a background job of
    a non-interactive shell: Python then leaves it ignored and `kill -INT` would do nothing. The
    handlers only set flags (the serving loop acts on them): raising from a handler could cut
    waitress off half-way through reading a request. A second signal stops without waiting.
    """
    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)
