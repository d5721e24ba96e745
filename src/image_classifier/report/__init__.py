"""Everything a run writes for people: figures, ``comparison.csv``, ``metrics.json``, ``report.md``,
``report.html``.

All of it is drawn from one :class:`~image_classifier.results.Study`, which is also what
``metrics.json`` holds (:meth:`Study.to_json`), so a report can be redrawn from a finished run
(``Study.load(run_dir)``) and no two artefacts can disagree. :func:`write_report` fills in the
figures (``Study.plots``, ``ModelResult.plots``) and ``timings["report_seconds"]``.

``report.md``, ``report.html`` and the figures are written in one of :data:`i18n.SUPPORTED
<image_classifier.i18n.SUPPORTED>` (``lang``); class, model and file names are never translated,
and ``comparison.csv`` and ``metrics.json`` are the same in every language.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from image_classifier.fileio import atomic_write_text
from image_classifier.i18n import DEFAULT, Translator, translator
from image_classifier.report import plots
from image_classifier.report.html import render_html
from image_classifier.report.markdown import render_markdown
from image_classifier.report.tables import per_image_ms, write_comparison_csv, write_metrics_json
from image_classifier.results import TEST_IMAGES, Study
from image_classifier.runs import COMPARISON_CSV_NAME, METRICS_NAME, PLOTS_DIR, REPORT_HTML_NAME, REPORT_MD_NAME

log = logging.getLogger(__name__)

__all__ = ["ReportFiles", "write_report", "plot_slug"]

#: Study figures that ``compare`` draws from the test images (the shortcut audit's example strip):
#: a redrawn report keeps them.
KEPT_PLOTS = ("shortcut_example",)


@dataclass(frozen=True)
class ReportFiles:
    run_dir: Path
    html: Path
    markdown: Path
    csv: Path
    metrics_json: Path
    plots: list[Path]


def plot_slug(name: str) -> str:
    """A file-name-safe form of a model name."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return slug or "model"


def draw_plots(study: Study, run_dir: Path, *,
               image_loader: Callable[[str], Image.Image] | None = None, t: Translator | None = None) -> list[Path]:
    """Draw every figure into ``run_dir/plots`` (in ``t``'s language, default English) and record
    their relative paths in ``study``."""
    t = t or translator(DEFAULT)
    out: list[Path] = []
    plot_dir = run_dir / PLOTS_DIR
    where = t("report.plot.reliability.where_test" if study.scored_set == TEST_IMAGES
              else "report.plot.reliability.where_scored")
    used: set[str] = set()
    for m in study.models:
        slug = plot_slug(m.name)
        while slug in used:  # two names that slug alike must not overwrite each other's plots
            slug += "_"
        used.add(slug)
        rel = {"confusion": f"{PLOTS_DIR}/{slug}-confusion.png"}
        out.append(plots.confusion_matrix_png(m.test.confusion_matrix, m.test.classes, run_dir / rel["confusion"],
                                              title=m.name, t=t))
        rel["curves"] = f"{PLOTS_DIR}/{slug}-training.png"
        out.append(plots.training_curves_png(m.training.history, run_dir / rel["curves"],
                                             title=t("report.plot.curves.title", model=m.name),
                                             best_epoch=m.validation.best_epoch, t=t))
        if m.test.reliability_uncalibrated:
            # Before and after this model's temperature (a metrics.json from before calibration has
            # no "before" bins, and no figure).
            rel["calibration"] = f"{PLOTS_DIR}/{slug}-calibration.png"
            out.append(plots.calibration_png(
                m.name, m.test.reliability_uncalibrated, m.test.ece_uncalibrated, m.test.reliability, m.test.ece,
                run_dir / rel["calibration"], temperature=m.calibration.temperature if m.calibration else None,
                where=where, t=t))
        errors_rel = f"{PLOTS_DIR}/{slug}-errors.png"
        gallery = plots.error_gallery_png(m.errors, run_dir / errors_rel, title=m.name, loader=image_loader, t=t,
                                          overlay_root=run_dir)
        if gallery is not None:
            rel["errors"] = errors_rel
            out.append(gallery)
        m.plots = rel
    rows = study.rows()
    # Figures drawn by compare from the images themselves (not from the Study) are kept.
    study_plots: dict[str, str] = {k: v for k, v in study.plots.items() if k in KEPT_PLOTS}
    # One model has no trade-off to show; its numbers are in the table.
    if len(rows) > 1 and all(per_image_ms(r) is not None for r in rows):
        best = study.selection.best if study.selection is not None else None
        out.append(plots.summary_png(rows, plot_dir / "summary.png", best=best, t=t))
        study_plots["summary"] = f"{PLOTS_DIR}/summary.png"
    out.append(plots.reliability_png([(m.name, m.test.reliability, m.test.ece) for m in study.models],
                                     plot_dir / "reliability.png", where=where, t=t))
    study_plots["reliability"] = f"{PLOTS_DIR}/reliability.png"
    study.plots = study_plots
    return out


def write_report(study: Study, run_dir: str | Path, *,
                 image_loader: Callable[[str], Image.Image] | None = None, lang: str = DEFAULT,
                 title: str | None = None) -> ReportFiles:
    """Draw the figures and write ``comparison.csv``, ``metrics.json``, ``report.md``, ``report.html``.

    ``lang``: the language of ``report.md``, ``report.html`` and the figures (ValueError for one
    not in :data:`~image_classifier.i18n.SUPPORTED`). ``title``: the reports' heading, already in
    ``lang`` (default: ``study.title``, which ``metrics.json`` keeps whatever the language).

    Fills in ``study``'s figures and ``timings["report_seconds"]`` (and its ``run_dir``) so that
    ``metrics.json`` describes exactly what was written.
    """
    t = translator(lang)
    start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    study.run_dir = run_dir
    plot_files = draw_plots(study, run_dir, image_loader=image_loader, t=t)
    study.timings["report_seconds"] = time.perf_counter() - start
    csv_path = write_comparison_csv(study, run_dir / COMPARISON_CSV_NAME)
    json_path = write_metrics_json(study, run_dir / METRICS_NAME)
    md_path = run_dir / REPORT_MD_NAME
    atomic_write_text(md_path, render_markdown(study, t, title=title))  # a kill or a full disk leaves the old file or the new one
    html_path = run_dir / REPORT_HTML_NAME
    atomic_write_text(html_path, render_html(study, run_dir, t, title=title))
    log.info("report written to %s (%.1f s)", html_path, time.perf_counter() - start)
    return ReportFiles(run_dir, html_path, md_path, csv_path, json_path, plot_files)
