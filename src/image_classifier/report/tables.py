"""The comparison table in its forms: ``comparison.csv``, ``metrics.json``, terminal text, and the
report's other tables (backends, faces), with the number formatting they share.

All of them are derived from one :class:`~image_classifier.results.Study` (its rows are
:meth:`Study.rows`, columns :data:`~image_classifier.results.COLUMNS`), so the CSV, the JSON, the
HTML and the terminal never disagree.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from image_classifier.fileio import atomic_write_text
from image_classifier.results import COLUMNS, Study
from image_classifier.units import fmt_seconds

def per_image_ms(row: dict) -> float | None:
    """What one image costs the model: the batch-1 forward pass for a CNN; for a face model, whose
    forward pass is only its no-face fallback, the whole file -> label time (dlib included)."""
    return row["e2e_latency_ms_p50"] if row.get("family") == "face" else row["latency_ms_p50"]


def face_survey_table(study: Study) -> tuple[str, list[str], list[list[object]]] | None:
    """(summary sentence, headers, rows per class) of the face survey, or None when it did not run."""
    faces = study.data.faces
    if faces is None:
        return None
    methods = ", ".join(f"{m} {n}" for m, n in faces.methods.items()) or "none"
    text = (f"{faces.with_face} of {faces.images} images show a face ({100 * faces.detection_rate:.0f} %; "
            f"the largest face found by: {methods}). Each model's test accuracy on the test images with "
            "a face and on those without is in the comparison table.")
    rows = [[c, v["none"], v["one"], v["several"]] for c, v in faces.per_class.items()]
    return text, ["class", "no face", "one face", "several faces"], rows


#: How the report names each backend.
BACKEND_LABELS = {"torch": "PyTorch (eager)", "torch-bf16": "PyTorch bf16", "onnx": "ONNX Runtime",
                  "onnx-int8": "ONNX Runtime int8"}


#: What the backend table's figures mean (shown under it in HTML and Markdown).
BACKEND_HELP = ("Figures: both backends timed in the same interleaved rounds on this machine (batch 1 "
                "medians; speedup = eager PyTorch latency / this backend's). serve default: what "
                "`image-classifier serve` runs with --backend auto (recorded in the model's backend.json).")


def backend_table(study: Study) -> tuple[list[str], list[list[str]]]:
    """The "Inference backends" table: one row per model and backend (figures from ``compare``'s
    interleaved measurement), plus a row for each backend left out and why. Empty when no model
    has backend figures (e.g. ``evaluate``)."""
    headers = ["model", "backend", "ms/img p50", "file→label ms", "img/s @32", "speedup vs PyTorch",
               "serve default"]
    rows: list[list[str]] = []
    for m in study.models:
        if m.backends is None or not m.backends.backends:
            continue
        default = m.backends.serve_backend.name
        for name, b in m.backends.backends.items():
            speedup = b.get("speedup_latency")
            rows.append([m.name, BACKEND_LABELS.get(name, name), fmt_ms(b.get("latency_ms_p50")),
                         fmt_ms(b.get("e2e_latency_ms_p50")), fmt_num(b.get("throughput_ips"), 1),
                         "–" if speedup is None else f"{speedup:.2f}×", "yes" if name == default else ""])
        for name, why in m.backends.skipped.items():
            rows.append([m.name, BACKEND_LABELS.get(name, name), why, "", "", "", ""])
    return headers, rows


#: What runs where in a face model (the backends run only its no-face fallback network).
FACE_BACKEND_NOTE = ("finding the faces, their landmarks and the 128-D descriptor run in dlib (CPU) for every "
                     "image, outside these backends; the face head is a small matrix product in numpy; the "
                     "backends above run the no-face fallback network (MobileNetV2), and file→label includes "
                     "the dlib part")


def backend_notes(study: Study) -> list[str]:
    """One line per model: which backend ``serve`` runs by default and why (and for a face model,
    which part runs in dlib)."""
    notes = [f"{m.name}: serve uses {m.backends.serve_backend.name} ({m.backends.serve_backend.reason})"
             for m in study.models if m.backends is not None]
    return notes + [f"{m.name}: {FACE_BACKEND_NOTE}" for m in study.models if m.family == "face"]


def write_comparison_csv(study: Study, path: str | os.PathLike) -> Path:
    """``comparison.csv``: full-precision numbers (``repr`` of floats), empty cell for unknown."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in study.rows():
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())
    return path


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays sneak in from metrics; paths from the orchestrator.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null so every JSON parser can read the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_metrics_json(study: Study, path: str | os.PathLike) -> Path:
    """``metrics.json``: :meth:`Study.to_json` (read back with :meth:`Study.load`)."""
    path = Path(path)
    text = json.dumps(_finite(json.loads(json.dumps(study.to_json(), default=_json_default))), indent=2,
                      ensure_ascii=False)
    atomic_write_text(path, text + "\n")
    return path


# ---- human formatting, shared by the terminal, Markdown and HTML --------------------------------

def fmt_params(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return str(n)


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_mb(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if x < 1 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def fmt_sig(x: float | None) -> str:
    """Three significant digits, no exponent for the usual range (GFLOPs: 0.0123, 0.313, 4.09)."""
    return "–" if x is None else f"{x:.3g}" if x >= 1e-4 else f"{x:.1e}"


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_acc_ci(row: dict) -> str:
    return (f"{row['test_accuracy']:.3f} [{row['test_accuracy_ci_low']:.2f}, "
            f"{row['test_accuracy_ci_high']:.2f}]")


#: (header, formatter) for the human-readable comparison table.
DISPLAY_COLUMNS: Sequence[tuple[str, Any]] = (
    ("model", lambda r: r["model"] + (" *" if r["selected"] else "")),
    ("val acc", lambda r: fmt_num(r["val_accuracy"])),
    ("test acc [95% CI]", fmt_acc_ci),
    ("macro-F1", lambda r: fmt_num(r["macro_f1"])),
    ("log-loss", lambda r: fmt_num(r["log_loss"])),
    ("ECE", lambda r: fmt_num(r["ece"])),
    ("params", lambda r: fmt_params(r["params"])),
    ("size MB", lambda r: fmt_mb(r["size_mb"])),
    ("GFLOPs", lambda r: fmt_sig(r["gflops_per_image"])),
    ("ms/img p50 / p95", lambda r: f"{fmt_ms(r['latency_ms_p50'])} / {fmt_ms(r['latency_ms_p95'])}"),
    ("file→label ms", lambda r: fmt_ms(r["e2e_latency_ms_p50"])),
    ("img/s @32", lambda r: fmt_num(r["throughput_ips"], 1)),
    ("train", lambda r: fmt_seconds(r["train_seconds"])),
)
#: Shown after the others when the face survey ran.
FACE_DISPLAY_COLUMNS: Sequence[tuple[str, Any]] = (
    ("test acc face / no face", lambda r: f"{fmt_num(r['test_accuracy_face'])} / {fmt_num(r['test_accuracy_noface'])}"),
)


def display_table(study: Study) -> tuple[list[str], list[list[str]]]:
    rows = study.rows()
    columns = list(DISPLAY_COLUMNS)
    if any(r["face_detection_rate"] is not None for r in rows):
        columns += FACE_DISPLAY_COLUMNS
    headers = [h for h, _ in columns]
    return headers, [[f(r) for _, f in columns] for r in rows]


def format_terminal_table(study: Study) -> str:
    """Fixed-width text table; ``*`` marks the model selected by validation accuracy."""
    headers, body = display_table(study)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    if any(r["selected"] for r in study.rows()):
        out.append("* selected by validation accuracy (the test split played no part in the choice)")
    return "\n".join(out)
