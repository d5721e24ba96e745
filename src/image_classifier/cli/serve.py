"""``image-classifier serve PATH``: the web page and JSON API on a production WSGI server (waitress)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from image_classifier.cli.options import resolve_device_option
from image_classifier.errors import ImageClassifierError
from image_classifier.i18n import DEFAULT as DEFAULT_LANG, SUPPORTED as LANGUAGES
from image_classifier.inference.options import AnswerOptions
from image_classifier.optionspec import add_arguments, from_args

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_THREADS = 8
# One thread per forward pass and one forward pass per core: measured on a 2-core machine shared
# with other work, a 2-thread forward pass in the server took twice as long as in a quiet
# benchmark loop, while 1-thread passes, two at a time, matched it (bench/serve_load.py).
DEFAULT_TORCH_THREADS = 1


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
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 = every network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default: %(default)s; 0 = any free port)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help="request threads of the web server (default: %(default)s)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="threads of one forward pass (default: 1); the server runs cores / this many forward "
                        "passes at a time, so they never fight over the cores")
    p.add_argument("--max-batch", type=int, default=None,
                   help="largest batch formed from requests that arrive together (default: 8; 1 = no batching)")
    add_arguments(p, AnswerOptions)
    p.add_argument("--models", default=None, metavar="NAME[,NAME...]",
                   help="serve only these models of a run (default: all of them)")
    p.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest accepted upload in MB (default: %(default)s)")
    p.add_argument("--lang", choices=LANGUAGES, default=DEFAULT_LANG,
                   help="the web page's language when neither ?lang= nor the browser's Accept-Language "
                        f"asks for one of {', '.join(LANGUAGES)} (default: %(default)s)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    # Lazy (see image_classifier.cli): the server loads Flask, waitress and torch.
    from image_classifier import runtime
    from image_classifier.inference.rejection import describe_tradeoff
    from image_classifier.serve.app import create_app
    from image_classifier.serve.server import make_server, serve_until, server_urls
    from image_classifier.serve.store import ModelStore

    if args.threads < 1:
        raise ImageClassifierError("--threads must be at least 1")
    if args.max_upload_mb <= 0:
        raise ImageClassifierError("--max-upload-mb must be positive")
    answer = from_args(AnswerOptions, args)  # --keep with --no-reject: exit 2, no server
    device = resolve_device_option(answer.device, answer.backend)  # so is --device cuda without a GPU
    runtime.configure(num_threads=args.torch_threads or DEFAULT_TORCH_THREADS)
    only = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else None
    # Reads only the model cards: a wrong path fails here, before the server starts.
    store = ModelStore.from_paths(args.paths, only=only, backend=answer.backend, reject=answer.reject,
                                  device=device, keep=answer.keep,
                                  **({"max_batch": args.max_batch} if args.max_batch else {}))
    max_upload = int(args.max_upload_mb * 1024 * 1024)
    app = create_app(store, max_upload_bytes=max_upload, load=False, lang=args.lang)
    server = make_server(app, host=args.host, port=args.port, threads=args.threads, max_upload_bytes=max_upload)

    for url in server_urls(server):
        print(f"image-classifier: serving {', '.join(store.names)} on {url}  (Ctrl+C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"image-classifier: warning: listening on {args.host}: other machines on the network can use this "
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
