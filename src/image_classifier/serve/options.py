"""What ``image-classifier serve`` is asked to do, each option declared once (:mod:`image_classifier.optionspec`):
the parser and the checks come from these fields (those of every answering command are
:class:`~image_classifier.inference.options.AnswerOptions`). A light module: ``serve --help`` reads it
without loading Flask or PyTorch."""
from __future__ import annotations

from dataclasses import dataclass

from image_classifier.errors import OptionError
from image_classifier.i18n import DEFAULT as DEFAULT_LANG, SUPPORTED as LANGUAGES
from image_classifier.inference.options import AnswerOptions
from image_classifier.optionspec import above_zero, at_least_one, option

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_THREADS = 8
# One thread per forward pass and one forward pass per core: measured on a 2-core machine shared
# with other work, a 2-thread forward pass in the server took twice as long as in a quiet
# benchmark loop, while 1-thread passes, two at a time, matched it (bench/serve_load.py).
DEFAULT_TORCH_THREADS = 1
#: Where a server that answers every network is not local (the warning the command line prints).
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _check_port(port: int) -> int:
    if not 0 <= int(port) <= 65535:
        raise OptionError(f"--port must be between 0 (any free port) and 65535, not {port}")
    return int(port)


def _model_names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


@dataclass(frozen=True, kw_only=True)
class ServeOptions(AnswerOptions):
    """How ``serve`` serves, each field the option of the same name; checked when made, before any
    model loads or the port is bound."""

    host: str = option(DEFAULT_HOST, help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 = "
                                          "every network)")
    port: int = option(DEFAULT_PORT, check=_check_port, help="TCP port (default: %(default)s; 0 = any free port)")
    threads: int = option(DEFAULT_THREADS, check=at_least_one("--threads"),
                          help="request threads of the web server (default: %(default)s)")
    torch_threads: int = option(DEFAULT_TORCH_THREADS, check=at_least_one("--torch-threads"),
                                help="threads of one forward pass (default: %(default)s); the server runs cores / "
                                     "this many forward passes at a time, so they never fight over the cores")
    max_batch: int | None = option(None, check=at_least_one("--max-batch"),
                                   help="largest batch formed from requests that arrive together (default: 8; "
                                        "1 = no batching)")
    models: tuple[str, ...] | None = option(None, metavar="NAME[,NAME...]", parse=_model_names,
                                            help="serve only these models of a run (default: all of them)")
    max_upload_mb: float = option(10.0, check=above_zero("--max-upload-mb"), help="largest accepted upload in MB (default: %(default)s)")
    lang: str = option(DEFAULT_LANG, choices=LANGUAGES,
                       help="the web page's language when neither ?lang= nor the browser's Accept-Language asks for "
                            f"one of {', '.join(LANGUAGES)} (default: %(default)s)")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
