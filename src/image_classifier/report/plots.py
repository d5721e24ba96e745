"""The report's figures, drawn with matplotlib's non-interactive Agg backend into PNG files.

Every function takes plain data (lists, rows, :mod:`image_classifier.results` records) so a
report can be redrawn from a finished run without the models. Class names come from users' folder names, so every label
goes through :func:`_text`: matplotlib would otherwise read ``$...$`` in a name as math.
Titles, axis labels and legends come from the catalog of the translator given (English by
default), and numbers on the axes take its decimal separator.
"""
from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers/CI; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, ScalarFormatter  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from image_classifier.fileio import atomic_write_bytes  # noqa: E402
from image_classifier.i18n import Translator, translator  # noqa: E402
from image_classifier.report.tables import per_image_ms  # noqa: E402
from image_classifier.results import Misclassified  # noqa: E402

EN = translator("en")

log = logging.getLogger(__name__)

DPI = 100
# Colour-blind-safe palette (Okabe-Ito), one colour per model in a run.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000"]


def _short(s: object, limit: int) -> str:
    s = str(s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _text(s: object, limit: int | None = None) -> str:
    """A label safe for matplotlib: no mathtext, optionally shortened. Apply once per string."""
    s = _short(s, limit) if limit is not None else str(s)
    return s.replace("$", r"\$")


class _DecimalFormatter(ScalarFormatter):
    """matplotlib's default tick labels with another decimal separator ("0,2" for "0.2")."""

    def __init__(self, decimal: str) -> None:
        super().__init__()
        self.decimal = decimal

    def __call__(self, x: float, pos: int | None = None) -> str:
        return super().__call__(x, pos).replace(".", self.decimal)


def _localize_ticks(t: Translator, *axes: plt.Axes) -> None:
    """Give the linear axes of ``axes`` the language's decimal separator. Nothing changes for a
    language that writes "." (English figures stay exactly as matplotlib draws them)."""
    if t.decimal == ".":
        return
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), ScalarFormatter):
                axis.set_major_formatter(_DecimalFormatter(t.decimal))


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())  # never half a PNG after a kill or a full disk
    return path


def confusion_matrix_png(
    cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike, *, title: str = "",
    t: Translator = EN,
) -> Path:
    """Counts in every cell; colour = share of the true class (row), so small classes still show."""
    return _save(confusion_matrix_figure(cm, classes, title=title, t=t), path)


def confusion_matrix_figure(
    cm: Sequence[Sequence[int]], classes: Sequence[str], *, title: str = "", t: Translator = EN,
) -> plt.Figure:
    """The figure :func:`confusion_matrix_png` saves."""
    cm = np.asarray(cm, dtype=np.int64)
    n = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = max(3.2, 0.75 * n + 1.8)
    fig, ax = plt.subplots(figsize=(side + 0.6, side))
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    labels = [_text(c, 18) for c in classes]
    ax.set_xticks(range(n), labels, rotation=35, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel(t("report.plot.confusion.predicted"))
    ax.set_ylabel(t("report.plot.confusion.true"))
    fontsize = 11 if n <= 8 else 8 if n <= 15 else 6
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize,
                    color="white" if share[i, j] > 0.55 else "black")
    acc = np.trace(cm) / cm.sum() if cm.sum() else float("nan")
    counts = {"correct": np.trace(cm), "total": cm.sum(), "accuracy": t.percent(acc, 1)}
    ax.set_title(_text(t("report.plot.confusion.title", title=title, **counts) if title else
                       t("report.plot.confusion.title_untitled", **counts)), fontsize=10)
    return fig


def _phase_spans(history: Sequence[dict]) -> list[tuple[str, float, float]]:
    spans: list[tuple[str, float, float]] = []
    for row in history:
        e = float(row["epoch"])
        phase = str(row.get("phase", ""))
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], e)
        else:
            spans.append((phase, e, e))
    return spans


def training_curves_png(
    history: Sequence[dict], path: str | os.PathLike, *, title: str = "", best_epoch: int | None = None,
    t: Translator = EN,
) -> Path:
    """Loss and accuracy per epoch, train vs validation, with the training phases shaded/labelled."""
    return _save(training_curves_figure(history, title=title, best_epoch=best_epoch, t=t), path)


def training_curves_figure(
    history: Sequence[dict], *, title: str = "", best_epoch: int | None = None, t: Translator = EN,
) -> plt.Figure:
    """The figure :func:`training_curves_png` saves."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    if not history:
        for ax in (ax_loss, ax_acc):
            ax.text(0.5, 0.5, t("report.plot.curves.no_history"), ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        fig.suptitle(_text(title), fontsize=11)
        return fig
    epochs = [r["epoch"] for r in history]

    def series(key: str) -> list[float]:
        return [float(r[key]) if r.get(key) is not None else math.nan for r in history]

    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        for series_key, colour in ((f"train_{key}", PALETTE[0]), (f"val_{key}", PALETTE[1])):
            # A series and its label share the name: train_loss, "report.plot.curves.train_loss", ...
            ax.plot(epochs, series(series_key), "-o", ms=3, color=colour, label=t(f"report.plot.curves.{series_key}"))
        ax.set_xlabel(t("report.plot.curves.epoch"))
        ax.set_ylabel(t(f"report.plot.curves.{key}"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        spans = _phase_spans(history)
        for k, (phase, start, end) in enumerate(spans):
            if k % 2 == 1:
                ax.axvspan(start - 0.5, end + 0.5, color="0.92", zorder=0)
            if k > 0:
                ax.axvline(start - 0.5, color="0.4", ls="--", lw=1)
            if phase:
                ax.text((start + end) / 2, 1.01, _text(phase, 14), transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=8, color="0.3")
        if best_epoch is not None and best_epoch in epochs:
            i = epochs.index(best_epoch)
            val = series(f"val_{key}")[i]
            ax.plot([best_epoch], [val], "*", ms=13, color=PALETTE[4], label=t("report.plot.curves.kept_epoch"), zorder=5)
    _localize_ticks(t, ax_loss, ax_acc)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.suptitle(_text(title), fontsize=11, y=1.0)
    fig.tight_layout()
    return fig


def _default_loader(path: str) -> Image.Image:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


#: The error gallery shows at most this many mistakes (the most confident); compare explains as many.
GALLERY_MAX_ITEMS = 40


def error_gallery_png(
    errors: Sequence[Misclassified],
    path: str | os.PathLike,
    *,
    title: str = "",
    max_items: int = GALLERY_MAX_ITEMS,
    loader: Callable[[str], Image.Image] | None = None,
    thumb: int = 180,
    t: Translator = EN,
    overlay_root: str | os.PathLike | None = None,
) -> Path | None:
    """Thumbnails of misclassified images captioned with true label, prediction and confidence.

    Most confident mistakes first (those are the worrying ones). With ``overlay_root`` (the run
    directory), an error's :attr:`~Misclassified.overlay` (its Grad-CAM heat map, or the face that
    decided) is drawn beside its photo. Returns ``None`` when there is nothing to draw.
    """
    fig = error_gallery_figure(errors, title=title, max_items=max_items, loader=loader, thumb=thumb, t=t,
                               overlay_root=overlay_root)
    return None if fig is None else _save(fig, path)


def _letterbox(img: Image.Image, side: int) -> Image.Image:
    """``img`` fitted into a white ``side`` x ``side`` square: every cell the same size, so captions never overlap."""
    img = img.copy()
    img.thumbnail((side, side))
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return canvas


def _gallery_cell(err: Misclassified, loader: Callable[[str], Image.Image], thumb: int,
                  overlay_root: Path | None) -> Image.Image:
    """The photo, and beside it (when there is one) its overlay, side by side."""
    img = loader(str(err.path))
    side = min(max(img.size), thumb * 2)
    photo = _letterbox(img, side)
    if overlay_root is None or not err.overlay:
        return photo
    try:
        with Image.open(overlay_root / err.overlay) as ov:
            overlay = _letterbox(ov.convert("RGB"), side)
    except OSError as exc:  # deleted since the run: the photo alone
        log.warning("error gallery: cannot show the overlay %s: %s", err.overlay, exc)
        return photo
    pair = Image.new("RGB", (2 * side + side // 20, side), (255, 255, 255))
    pair.paste(photo, (0, 0))
    pair.paste(overlay, (side + side // 20, 0))
    return pair


def error_gallery_figure(
    errors: Sequence[Misclassified],
    *,
    title: str = "",
    max_items: int = GALLERY_MAX_ITEMS,
    loader: Callable[[str], Image.Image] | None = None,
    thumb: int = 180,
    t: Translator = EN,
    overlay_root: str | os.PathLike | None = None,
) -> plt.Figure | None:
    """The figure :func:`error_gallery_png` saves (None: no errors)."""
    if not errors:
        return None
    loader = loader or _default_loader
    root = Path(overlay_root) if overlay_root is not None else None
    items = sorted(errors, key=lambda e: -e.confidence)[:max_items]
    paired = root is not None and any(e.overlay for e in items)
    # A photo with its overlay is twice as wide: fewer columns, so a cell keeps its size.
    cols = min(3 if paired else 6, len(items))
    rows = math.ceil(len(items) / cols)
    cell_w = thumb / DPI * (2 if paired else 1)
    cell_h = thumb / DPI
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell_w * 1.2, rows * cell_h * 1.25), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, err in zip(axes.flat, items):
        try:
            ax.imshow(np.asarray(_gallery_cell(err, loader, thumb, root)))
        except Exception as exc:  # a file moved since the run: say so in the cell, keep the rest
            log.warning("error gallery: cannot show %s: %s", err.path, exc)
            ax.text(0.5, 0.5, t("report.plot.errors.unavailable"), ha="center", va="center", transform=ax.transAxes)
        ax.set_title(
            _text(t("report.plot.errors.caption", true=_short(err.true, 16), pred=_short(err.predicted, 16),
                    confidence=t.percent(err.confidence, 0))),
            fontsize=9, loc="left", color="#8b0000",
        )
    shown = (t("report.plot.errors.shown", shown=len(items), count=len(errors)) if len(items) < len(errors)
             else "")
    heading = t("report.plot.errors.title", title=title, count=len(errors), shown=shown)
    if paired:
        heading += "\n" + t("report.plot.errors.overlay_note")
    fig.suptitle(_text(heading), fontsize=10)
    fig.tight_layout()
    return fig


def summary_png(models: Sequence[dict], path: str | os.PathLike, *, best: str | None = None,
                t: Translator = EN) -> Path:
    """Accuracy (with its 95 % CI) against per-image latency; marker area ~ model size on disk.

    The one picture that answers "which model, how accurate, how fast, how big". ``models`` are
    rows of :meth:`image_classifier.results.Study.rows`.
    """
    return _save(summary_figure(models, best=best, t=t), path)


def summary_figure(models: Sequence[dict], *, best: str | None = None, t: Translator = EN) -> plt.Figure:
    """The figure :func:`summary_png` saves."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    sizes = [float(m.get("size_mb") or 0.0) for m in models]
    smax = max(sizes) if sizes and max(sizes) > 0 else 1.0
    xs = [float(per_image_ms(m)) for m in models]  # a face model's whole file -> label time, see per_image_ms
    for k, m in enumerate(models):
        x, y = xs[k], float(m["test_accuracy"])
        lo, hi = float(m["test_accuracy_ci_low"]), float(m["test_accuracy_ci_high"])
        color = PALETTE[k % len(PALETTE)]
        ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="none", ecolor=color, capsize=5, lw=1.8)
        area = 60 + 900 * (sizes[k] / smax)
        chosen = m["model"] == best
        ax.scatter([x], [y], s=area, color=color, alpha=0.75, zorder=3,
                   edgecolors="black" if chosen else "none", linewidths=2.5)
        label = t("report.plot.summary.label", model=_short(m["model"], 20),
                  selected=t("report.plot.summary.selected") if chosen else "", accuracy=t.percent(y, 1),
                  mb=t.number(sizes[k], 1))
        # Alternate above/below so labels of models with similar speed do not overprint.
        above = k % 2 == 1
        ax.annotate(_text(label), (x, y), xytext=(10, 8 if above else -6), textcoords="offset points",
                    fontsize=8.5, va="bottom" if above else "top", fontweight="bold" if chosen else "normal")
    ax.set_xscale("log")
    lo_x, hi_x = min(xs), max(xs)
    # At least a factor 3 of range, and room on the right for the labels.
    span = max(hi_x / lo_x, 3.0)
    ax.set_xlim(lo_x / span**0.15, hi_x * span**0.45)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: t.localize_number(f"{v:g}")))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(t("report.plot.summary.xlabel"))
    ax.set_ylabel(t("report.plot.summary.ylabel"))
    ax.grid(alpha=0.3, which="major")
    low = min(float(m["test_accuracy_ci_low"]) for m in models)
    ax.set_ylim(max(0.0, low - 0.08), 1.03)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: t.percent(v, 0)))
    ax.set_title(t("report.plot.summary.title"), fontsize=10, pad=10)
    return fig


def reliability_png(models: Sequence[tuple[str, Sequence[dict], float | None]], path: str | os.PathLike, *,
                    where: str | None = None, t: Translator = EN) -> Path:
    """Reliability diagram: per confidence bin, accuracy against mean confidence, one line a model.

    ``models``: (name, reliability bins from ``compute_metrics``, ECE). Points on the diagonal
    mean the confidence can be read as a probability; below it, the model is over-confident.
    ``where``: what the images are, for the title (default: the test split, in ``t``'s language).
    """
    return _save(reliability_figure(models, where=where, t=t), path)


def reliability_figure(models: Sequence[tuple[str, Sequence[dict], float | None]], *, where: str | None = None,
                       t: Translator = EN) -> plt.Figure:
    """The figure :func:`reliability_png` saves."""
    where = t("report.plot.reliability.where_test") if where is None else where
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], "--", color="0.5", lw=1, label=t("report.plot.reliability.diagonal"))
    for k, (name, bins, ece) in enumerate(models):
        if not bins:
            continue
        conf = [b["confidence"] for b in bins]
        acc = [b["accuracy"] for b in bins]
        counts = np.array([b["count"] for b in bins], dtype=float)
        color = PALETTE[k % len(PALETTE)]
        ax.plot(conf, acc, "-", color=color, lw=1.2, label=_text(t("report.plot.reliability.legend", model=name, ece=t.number(ece, 3))))
        ax.scatter(conf, acc, s=12 + 120 * counts / counts.max(), color=color, alpha=0.8)
    _reliability_axes(ax, t)
    ax.set_title(_text(t("report.plot.reliability.title", where=where)), fontsize=10)
    return fig


def _reliability_axes(ax: plt.Axes, t: Translator) -> None:
    """The axes every reliability diagram shares: [0, 1] both ways, labels, grid, legend."""
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(t("report.plot.reliability.xlabel"))
    ax.set_ylabel(t("report.plot.reliability.ylabel"))
    _localize_ticks(t, ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


# ---- calibration: one model's reliability before and after its temperature --------------------

def calibration_png(name: str, before: Sequence[dict], ece_before: float | None, after: Sequence[dict],
                    ece_after: float | None, path: str | os.PathLike, *, temperature: float | None = None,
                    where: str | None = None, t: Translator = EN) -> Path:
    """One model's reliability diagram before (uncalibrated, dashed) and after (calibrated, the
    probabilities it serves) temperature scaling; see :func:`calibration_figure`."""
    return _save(calibration_figure(name, before, ece_before, after, ece_after, temperature=temperature,
                                    where=where, t=t), path)


def calibration_figure(name: str, before: Sequence[dict], ece_before: float | None, after: Sequence[dict],
                       ece_after: float | None, *, temperature: float | None = None, where: str | None = None,
                       t: Translator = EN) -> plt.Figure:
    """The figure :func:`calibration_png` saves: per confidence bin, accuracy against mean confidence."""
    where = t("report.plot.reliability.where_test") if where is None else where
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], "--", color="0.5", lw=1, label=t("report.plot.reliability.diagonal"))
    for bins, ece, key, color, style in ((before, ece_before, "report.plot.calibration.before", PALETTE[1], ":"),
                                         (after, ece_after, "report.plot.calibration.after", PALETTE[0], "-")):
        if not bins:
            continue
        conf = [b["confidence"] for b in bins]
        acc = [b["accuracy"] for b in bins]
        counts = np.array([b["count"] for b in bins], dtype=float)
        ax.plot(conf, acc, style, color=color, lw=1.4, label=_text(t(key, ece=t.number(ece, 3))))
        ax.scatter(conf, acc, s=12 + 100 * counts / counts.max(), color=color, alpha=0.75)
    _reliability_axes(ax, t)
    title = t("report.plot.calibration.title", model=_short(name, 28), where=where,
              temperature=t.number(temperature if temperature is not None else 1.0, 2))
    ax.set_title(_text(title), fontsize=9)
    return fig
