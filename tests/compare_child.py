"""Run the real CLI in a child process with two tiny architectures, and optionally SIGKILL it at a
named point of a ``compare`` run (the way a power cut or the OOM killer would stop it).

    python tests/compare_child.py [--kill-at POINT] compare DATA --models ...

A fresh process only knows the built-in architectures, so this registers the tiny ones first. The
kill points wrap library functions from outside (``compare`` imports them when it runs), so the
library carries no test hooks:

* ``train:ARCH``       just before ARCH's training starts;
* ``checkpoint:ARCH``  just after ARCH's first resume state is written (its first phase end);
* ``final:ARCH``       after ARCH's final save, before its resume state is removed;
* ``evaluate``         after the first model's test-split evaluation;
* ``export``           after the first model's ONNX export and backend timing;
* ``report``           in the middle of writing the report (plots and comparison.csv written).

The wrappers replace the names where ``compare`` looks them up (the workflow module
``image_classifier.study.comparison`` and the report package), before the CLI runs.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_helpers  # noqa: E402
from image_classifier.models.registry import ArchSpec, get_arch, register_arch  # noqa: E402
from image_classifier.preprocessing import Preprocessing  # noqa: E402

TINY = train_helpers.TINY
TWO_PHASE = "tiny_two_phase_cnn"


def register() -> tuple[str, str]:
    train_helpers.register_tiny()
    try:
        get_arch(TWO_PHASE)
    except KeyError:
        register_arch(ArchSpec(TWO_PHASE, train_helpers.tiny_cnn, Preprocessing(32),
                               lambda: train_helpers.two_phase_recipe(2, 2), description="test-only, two phases"))
    return TINY, TWO_PHASE


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _after(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        fn(*args, **kwargs)
        _die()

    return wrapped


def install_kill(point: str) -> None:
    import image_classifier.report as report
    import image_classifier.study.comparison as comparison
    from image_classifier.training.checkpoint import RunWriter

    where, _, arch = point.partition(":")
    if where == "train":
        original_train = comparison.train_model

        def train_model(split: Any, name: str, *args: Any, **kwargs: Any) -> Any:
            if name == arch:
                _die()
            return original_train(split, name, *args, **kwargs)

        comparison.train_model = train_model
    elif where in ("checkpoint", "final"):
        method = "save_resume" if where == "checkpoint" else "remove_resume"
        original = getattr(RunWriter, method)

        def hooked(self: RunWriter, *args: Any, **kwargs: Any) -> None:
            if self.meta.get("arch") == arch and where == "final":
                _die()  # the final card is written, the resume state not yet removed
            original(self, *args, **kwargs)
            if self.meta.get("arch") == arch:
                _die()

        setattr(RunWriter, method, hooked)
    elif where == "evaluate":
        comparison.evaluate_classifier = _after(comparison.evaluate_classifier)
    elif where == "export":
        comparison.measure_model_backends = _after(comparison.measure_model_backends)
    elif where == "report":
        report.write_metrics_json = _after(report.write_metrics_json)
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main(argv: list[str]) -> int:
    from image_classifier.cli import main as cli_main

    register()
    if argv[:1] == ["--kill-at"]:
        install_kill(argv[1])
        argv = argv[2:]
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
