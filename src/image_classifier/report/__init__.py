"""Everything a run writes for people: figures, ``comparison.csv``, ``metrics.json``, ``report.md``,
``report.html``.

All of it is drawn from one plain dict, the *study*, which is also what ``metrics.json`` holds, so
a report can be redrawn from a finished run and no two artefacts can disagree. Its keys:

- ``title``, ``created_utc``, ``command`` (the exact command line to reproduce the run);
- ``data``: ``root``, ``classes``, ``num_images``, ``split`` {``path``, ``seed``,
  ``manifest_sha256``, ``sizes`` {subset: {class: count}}}, ``warnings`` [str],
  ``duplicates`` {``summary``, ``policy``, ``groups`` [{``kind``, ``files``, ``subset``}]};
- ``machine``, ``versions``: flat {name: value} dicts; ``speed_config``;
- ``selection``: {``best``, ``criterion``, ``model_dir``} (absent for a single ``evaluate``);
- ``models``: list of {``name``, ``model_dir``, ``validation`` {``accuracy``, ``loss``,
  ``best_epoch``}, ``test`` (:func:`image_classifier.evaluate.metrics.compute_metrics`),
  ``speed`` (:func:`image_classifier.evaluate.speed.measure_classifier`), ``training``
  {``seconds``, ``peak_rss_mb``, ``history`` [epoch dicts]}, ``errors`` [{``path``,
  ``rel_path``, ``true``, ``pred``, ``confidence``}]}; ``plots`` is filled in here;
- ``pairwise``: :func:`image_classifier.evaluate.metrics.pairwise_mcnemar` output;
- ``timings``: {name: seconds}; ``report_seconds`` is filled in here;
- optional: ``scored_set`` (what the scored images are called, default "test images"),
  ``alerts`` [str] (shown first, e.g. "these images were trained on").
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

log = logging.getLogger(__name__)

__all__ = ["ReportFiles", "write_report", "plot_slug"]


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


def draw_plots(study: dict, run_dir: Path, *, image_loader: Callable[[str], Image.Image] | None = None) -> list[Path]:
    """Draw every figure into ``run_dir/plots`` and record their relative paths in ``study``."""
    from image_classifier.report import plots
    from image_classifier.report.tables import comparison_rows

    out: list[Path] = []
    plot_dir = run_dir / "plots"
    used: set[str] = set()
    for m in study["models"]:
        slug = plot_slug(m["name"])
        while slug in used:  # two names that slug alike must not overwrite each other's plots
            slug += "_"
        used.add(slug)
        test = m["test"]
        rel: dict[str, str] = {}
        rel["confusion"] = f"plots/{slug}-confusion.png"
        out.append(plots.confusion_matrix_png(test["confusion_matrix"], test["classes"], run_dir / rel["confusion"],
                                              title=m["name"]))
        training = m.get("training") or {}
        rel["curves"] = f"plots/{slug}-training.png"
        out.append(plots.training_curves_png(training.get("history") or [], run_dir / rel["curves"],
                                             title=f"{m['name']}: training", best_epoch=(m.get("validation") or {}).get("best_epoch")))
        gallery = plots.error_gallery_png(m.get("errors") or [], run_dir / f"plots/{slug}-errors.png",
                                          title=m["name"], loader=image_loader)
        if gallery is not None:
            rel["errors"] = f"plots/{slug}-errors.png"
            out.append(gallery)
        m["plots"] = rel
    rows = comparison_rows(study)
    study_plots: dict[str, str] = {}
    # One model has no trade-off to show; its numbers are in the table.
    if len(rows) > 1 and all(r["latency_ms_p50"] is not None for r in rows):
        out.append(plots.summary_png(rows, plot_dir / "summary.png", best=(study.get("selection") or {}).get("best")))
        study_plots["summary"] = "plots/summary.png"
    out.append(plots.reliability_png([(m["name"], m["test"].get("reliability") or [], m["test"]["ece"])
                                      for m in study["models"]], plot_dir / "reliability.png",
                                     where="test split" if study.get("scored_set", "test images") == "test images"
                                     else "scored images"))
    study_plots["reliability"] = "plots/reliability.png"
    study["plots"] = study_plots
    return out


def write_report(study: dict, run_dir: str | Path, *,
                 image_loader: Callable[[str], Image.Image] | None = None) -> ReportFiles:
    """Draw the figures and write ``comparison.csv``, ``metrics.json``, ``report.md``, ``report.html``.

    Mutates ``study`` (adds ``plots`` and ``timings.report_seconds``) so that ``metrics.json``
    describes exactly what was written.
    """
    from image_classifier.report.html import render_html
    from image_classifier.report.markdown import render_markdown
    from image_classifier.report.tables import write_comparison_csv, write_metrics_json

    start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plot_files = draw_plots(study, run_dir, image_loader=image_loader)
    study.setdefault("timings", {})["report_seconds"] = time.perf_counter() - start
    csv_path = write_comparison_csv(study, run_dir / "comparison.csv")
    json_path = write_metrics_json(study, run_dir / "metrics.json")
    md_path = run_dir / "report.md"
    atomic_write_text(md_path, render_markdown(study))  # a kill or a full disk leaves the old file or the new one
    html_path = run_dir / "report.html"
    atomic_write_text(html_path, render_html(study, run_dir))
    log.info("report written to %s (%.1f s)", html_path, time.perf_counter() - start)
    return ReportFiles(run_dir, html_path, md_path, csv_path, json_path, plot_files)
