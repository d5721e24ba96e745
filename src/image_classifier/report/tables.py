"""The comparison table in its three forms: rows (dicts), ``comparison.csv``, terminal text.

All of them are derived from the study dict (the content of ``metrics.json``, see
:mod:`image_classifier.report`), so the CSV, the JSON, the HTML and the terminal never disagree.
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
from image_classifier.units import fmt_seconds

#: CSV columns, in order. The first 13 are the ones the issue asks for; the rest add context.
COLUMNS = (
    "model",
    "test_accuracy",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "macro_f1",
    "log_loss",
    "ece",
    "params",
    "size_mb",
    "latency_ms_p50",
    "latency_ms_p95",
    "throughput_ips",
    "train_seconds",
    "test_n",
    "val_accuracy",
    "val_loss",
    "best_epoch",
    "trainable_params",
    "gflops_per_image",
    "e2e_latency_ms_p50",
    "e2e_latency_ms_p95",
    "peak_rss_mb",
    "selected",
    # Inference backends (``compare``): ONNX Runtime timed against eager PyTorch in the same rounds;
    # empty when the model was not exported.
    "onnx_latency_ms_p50",
    "onnx_e2e_latency_ms_p50",
    "onnx_throughput_ips",
    "onnx_speedup",
    "serve_backend",
    # Photos of people (``compare`` with the face survey on): test accuracy on the test images in
    # which a face was found and on the others, and the share of test images with a face.
    "test_accuracy_face",
    "test_accuracy_noface",
    "face_detection_rate",
    # "cnn", or "face" for a face model, whose latency_ms_* are those of its no-face fallback network
    # alone (see per_image_ms).
    "family",
)


def _get(d: dict | None, key: str) -> Any:
    return None if d is None else d.get(key)


def comparison_rows(study: dict) -> list[dict]:
    """One flat dict per model, keys = :data:`COLUMNS`, numbers unrounded."""
    best = (study.get("selection") or {}).get("best")
    rows = []
    for m in study["models"]:
        test = m["test"]
        speed = m.get("speed") or {}
        val = m.get("validation") or {}
        training = m.get("training") or {}
        flops = speed.get("flops_per_image")
        onnx = (m.get("backends") or {}).get("onnx") or {}
        faces = m.get("faces") or {}
        n_face, n_noface = faces.get("test_images_face"), faces.get("test_images_noface")
        rows.append(
            {
                "model": m["name"],
                "test_accuracy": test["accuracy"],
                "test_accuracy_ci_low": test["accuracy_ci"][0],
                "test_accuracy_ci_high": test["accuracy_ci"][1],
                "macro_f1": test["macro_f1"],
                "log_loss": test["log_loss"],
                "ece": test["ece"],
                "params": speed.get("params"),
                "size_mb": speed.get("size_mb"),
                "latency_ms_p50": speed.get("latency_ms_p50"),
                "latency_ms_p95": speed.get("latency_ms_p95"),
                "throughput_ips": speed.get("throughput_ips"),
                "train_seconds": training.get("seconds"),
                "test_n": test["n"],
                "val_accuracy": val.get("accuracy"),
                "val_loss": val.get("loss"),
                "best_epoch": val.get("best_epoch"),
                "trainable_params": speed.get("trainable_params"),
                "gflops_per_image": flops / 1e9 if flops is not None else None,
                "e2e_latency_ms_p50": speed.get("e2e_latency_ms_p50"),
                "e2e_latency_ms_p95": speed.get("e2e_latency_ms_p95"),
                "peak_rss_mb": training.get("peak_rss_mb"),
                "selected": m["name"] == best,
                "onnx_latency_ms_p50": onnx.get("latency_ms_p50"),
                "onnx_e2e_latency_ms_p50": onnx.get("e2e_latency_ms_p50"),
                "onnx_throughput_ips": onnx.get("throughput_ips"),
                "onnx_speedup": onnx.get("speedup_latency"),
                "serve_backend": (m.get("serve_backend") or {}).get("name"),
                "test_accuracy_face": faces.get("test_accuracy_face"),
                "test_accuracy_noface": faces.get("test_accuracy_noface"),
                "face_detection_rate": (n_face / (n_face + n_noface) if n_face is not None and n_noface
                                        is not None and n_face + n_noface else None),
                "family": m.get("family", "cnn"),
            }
        )
    return rows


def per_image_ms(row: dict) -> float | None:
    """What one image costs the model: the batch-1 forward pass for a CNN; for a face model, whose
    forward pass is only its no-face fallback, the whole file -> label time (dlib included)."""
    return row["e2e_latency_ms_p50"] if row.get("family") == "face" else row["latency_ms_p50"]


def face_survey_table(study: dict) -> tuple[str, list[str], list[list[object]]] | None:
    """(summary sentence, headers, rows per class) of the face survey, or None when it did not run."""
    faces = (study.get("data") or {}).get("faces")
    if not faces:
        return None
    methods = ", ".join(f"{m} {n}" for m, n in (faces.get("methods") or {}).items()) or "none"
    text = (f"{faces['with_face']} of {faces['images']} images show a face ({100 * faces['detection_rate']:.0f} %; "
            f"the largest face found by: {methods}). Each model's test accuracy on the test images with "
            "a face and on those without is in the comparison table.")
    rows = [[c, v["none"], v["one"], v["several"]] for c, v in faces["per_class"].items()]
    return text, ["class", "no face", "one face", "several faces"], rows


#: How the report names each backend.
BACKEND_LABELS = {"torch": "PyTorch (eager)", "torch-bf16": "PyTorch bf16", "onnx": "ONNX Runtime",
                  "onnx-int8": "ONNX Runtime int8"}


#: What the backend table's figures mean (shown under it in HTML and Markdown).
BACKEND_HELP = ("Figures: both backends timed in the same interleaved rounds on this machine (batch 1 "
                "medians; speedup = eager PyTorch latency / this backend's). serve default: what "
                "`image-classifier serve` runs with --backend auto (recorded in the model's backend.json).")


def backend_table(study: dict) -> tuple[list[str], list[list[str]]]:
    """The "Inference backends" table: one row per model and backend (figures from ``compare``'s
    interleaved measurement), plus a row for each backend left out and why. Empty when no model
    has backend figures (e.g. ``evaluate``)."""
    headers = ["model", "backend", "ms/img p50", "file→label ms", "img/s @32", "speedup vs PyTorch",
               "serve default"]
    rows: list[list[str]] = []
    for m in study["models"]:
        backends = m.get("backends") or {}
        if not backends:
            continue
        default = (m.get("serve_backend") or {}).get("name")
        for name, b in backends.items():
            speedup = b.get("speedup_latency")
            rows.append([m["name"], BACKEND_LABELS.get(name, name), fmt_ms(b.get("latency_ms_p50")),
                         fmt_ms(b.get("e2e_latency_ms_p50")), fmt_num(b.get("throughput_ips"), 1),
                         "–" if speedup is None else f"{speedup:.2f}×", "yes" if name == default else ""])
        for name, why in (m.get("skipped") or {}).items():
            rows.append([m["name"], BACKEND_LABELS.get(name, name), why, "", "", "", ""])
    return headers, rows


#: What runs where in a face model (the backends run only its no-face fallback network).
FACE_BACKEND_NOTE = ("finding the faces, their landmarks and the 128-D descriptor run in dlib (CPU) for every "
                     "image, outside these backends; the face head is a small matrix product in numpy; the "
                     "backends above run the no-face fallback network (MobileNetV2), and file→label includes "
                     "the dlib part")


def backend_notes(study: dict) -> list[str]:
    """One line per model: which backend ``serve`` runs by default and why (and for a face model,
    which part runs in dlib)."""
    notes = [f"{m['name']}: serve uses {m['serve_backend']['name']} ({m['serve_backend']['reason']})"
             for m in study["models"] if m.get("serve_backend")]
    return notes + [f"{m['name']}: {FACE_BACKEND_NOTE}" for m in study["models"] if m.get("family") == "face"]


def write_comparison_csv(study: dict, path: str | os.PathLike) -> Path:
    """``comparison.csv``: full-precision numbers (``repr`` of floats), empty cell for unknown."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in comparison_rows(study):
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


def write_metrics_json(study: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    text = json.dumps(_finite(json.loads(json.dumps(study, default=_json_default))), indent=2,
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


def display_table(study: dict) -> tuple[list[str], list[list[str]]]:
    rows = comparison_rows(study)
    columns = list(DISPLAY_COLUMNS)
    if any(r["face_detection_rate"] is not None for r in rows):
        columns += FACE_DISPLAY_COLUMNS
    headers = [h for h, _ in columns]
    return headers, [[f(r) for _, f in columns] for r in rows]


def format_terminal_table(study: dict) -> str:
    """Fixed-width text table; ``*`` marks the model selected by validation accuracy."""
    headers, body = display_table(study)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    if any(r["selected"] for r in comparison_rows(study)):
        out.append("* selected by validation accuracy (the test split played no part in the choice)")
    return "\n".join(out)
