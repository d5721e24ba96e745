"""``image_classifier.compare(data, ...) -> Study``: the ``compare`` command from Python.

Same engine as the CLI (both build a :class:`~image_classifier.study.options.CompareOptions` and
call :func:`~image_classifier.study.comparison.run_compare`), same files in ``out``, and the same
re-run rules: finished models whose configuration matches are reused, so calling it again with the
same arguments costs seconds, not a training.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from image_classifier.optionspec import build
from image_classifier.results import Study
from image_classifier.study.options import CompareOptions


def compare(data: str | os.PathLike, *, out: str | os.PathLike | None = None,
            models: str | Sequence[str] | None = None,
            seed: int = 0, lang: str = "en", on_progress: Callable[[str], None] | None = None,
            **options: Any) -> Study:
    """Train and compare ``models`` on the folder ``data`` (one sub-folder of images per class).

    Writes the run into ``out`` (default ``runs/<data folder name>``: split, models, report) and
    returns its :class:`~image_classifier.results.Study`: ``.table``, ``.best``,
    ``.confusion(model)``, ``.errors(model)``, ``.report_path``; a notebook displays it.

    ``models``: architecture names, a list or "a,b" as the CLI takes them (default: the study's
    four, plus ``face_embedding`` for a folder of people). ``options`` are the other fields of
    :class:`~image_classifier.study.options.CompareOptions`, each the CLI option of the same name
    (dashes as underscores, ``--no-NAME`` as ``NAME=False``): ``split``, ``val``, ``test``,
    ``weights`` ({arch: path}), ``set`` ({"*": {key: value}} for every model, {arch: {...}} for
    one), ``speed_repeats``, ``cache``, ``cache_dir``, ``export``, ``faces``, ``audit``,
    ``ensemble``, ``ensemble_max_latency``, ``keep``, ``unknown``, ``device``, ``nproc``,
    ``resume`` ("auto", "resume", "fresh"), ``progress``.
    ``lang``: the language of ``report.md``, ``report.html`` and their figures, "en" or "es"
    (``comparison.csv``, ``metrics.json`` and the returned study are the same in every language).
    An unknown (or renamed) option is a ``TypeError`` naming the valid ones.
    ``on_progress`` receives the one-line status updates the CLI prints (default: logging).
    """
    # Imported here, not at the top: the workflow pulls in torch and torchvision (seconds), and this
    # module is imported by `import image_classifier`, which every CLI command (--help included) runs.
    from image_classifier.study.comparison import run_compare

    options = build(CompareOptions, "compare", dict(data=data, out=out, models=models, seed=seed, lang=lang, **options))
    return run_compare(options, on_progress=on_progress)
