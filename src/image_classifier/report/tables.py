"""The comparison table in its forms: ``comparison.csv``, ``metrics.json``, terminal text, and the
report's other tables (backends, faces), with the number formatting they share.

All of them are derived from one :class:`~image_classifier.results.Study` (its rows are
:meth:`Study.rows`, columns :data:`~image_classifier.results.COLUMNS`), so the CSV, the JSON, the
HTML and the terminal never disagree. Headers and sentences come from the catalog of the
report's language (a :class:`~image_classifier.i18n.Translator`, English by default: the terminal
is always English); ``comparison.csv`` and ``metrics.json`` are the same in every language.
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
from image_classifier.i18n import DEFAULT, Translator, translator
from image_classifier.results import COLUMNS, ModelResult, Study
from image_classifier.units import fmt_seconds

EN = translator("en")


def forward_pass_is_a_part(row: dict) -> bool:
    """Whether the model's forward pass is only part of what it computes per image, as its timing
    recorded (``forward_is_whole``: a face model's, or an ensemble's with a face member, leaves out
    the faces dlib finds and describes first)."""
    return row.get("forward_is_whole") is False


def per_image_ms(row: dict) -> float | None:
    """What one image costs the model: the batch-1 forward pass for a CNN; where the forward pass
    is only a part (:func:`forward_pass_is_a_part`), the whole file -> label time."""
    return row["e2e_latency_ms_p50"] if forward_pass_is_a_part(row) else row["latency_ms_p50"]


def face_survey_table(study: Study, t: Translator = EN) -> tuple[str, list[str], list[list[object]]] | None:
    """(summary sentence, headers, rows per class) of the face survey, or None when it did not run."""
    faces = study.data.faces
    if faces is None:
        return None
    # Detector names (hog, cnn, ...) are the face package's, the same in every language.
    methods = t("report.format.number_list_separator").join(
        t("report.faces.method", method=m, count=n) for m, n in faces.methods.items()) or t("report.format.none")
    text = t("report.faces.summary", with_face=faces.with_face, images=faces.images,
             rate=t.number(100 * faces.detection_rate, 0), methods=methods)
    rows = [[c, v["none"], v["one"], v["several"]] for c, v in faces.per_class.items()]
    return text, [t("report.table.class"), t("report.table.no_face"), t("report.table.one_face"),
                  t("report.table.several_faces")], rows


def backend_label(name: str, t: Translator = EN) -> str:
    """How the report names a backend ("onnx" -> "ONNX Runtime"); an unknown one by its own name."""
    return t.get(f"report.backends.name.{name}", name)


def backend_table(study: Study, t: Translator = EN) -> tuple[list[str], list[list[str]]]:
    """The "Inference backends" table: one row per model and backend (figures from ``compare``'s
    interleaved measurement), plus a row for each backend left out and why. Empty when no model
    has backend figures (e.g. ``evaluate``)."""
    headers = [t(f"report.backends.table.{k}") for k in ("model", "backend", "latency", "e2e_latency", "throughput",
                                                          "speedup", "serve_default")]
    rows: list[list[str]] = []
    for m in study.models:
        if m.backends is None or not m.backends.backends:
            continue
        default = m.backends.serve_backend.name
        for name, b in m.backends.backends.items():
            speedup = b.get("speedup_latency")
            rows.append([m.name, backend_label(name, t), t.localize_number(fmt_ms(b.get("latency_ms_p50"))),
                         t.localize_number(fmt_ms(b.get("e2e_latency_ms_p50"))), t.number(b.get("throughput_ips"), 1),
                         "–" if speedup is None else t("report.format.speedup", value=t.number(speedup, 2)),
                         t("report.format.yes") if name == default else ""])
        for name, why in m.backends.skipped.items():
            rows.append([m.name, backend_label(name, t), why, "", "", "", ""])
    return headers, rows


def backend_notes(study: Study, t: Translator = EN) -> list[str]:
    """One line per model: which backend ``serve`` runs by default and why (and for a face model,
    which part runs in dlib: the backends run only its no-face fallback network)."""
    notes = [t("report.backends.serve_note", model=m.name, backend=m.backends.serve_backend.name,
               reason=m.backends.serve_backend.reason) for m in study.models if m.backends is not None]
    # A kind's own note, keyed by its family (the face model's: which part runs in dlib).
    own = (t.get(f"report.backends.{m.family}_note", "", model=m.name) for m in study.models)
    return notes + [note for note in own if note]


def per_class_table(m: ModelResult, t: Translator = EN) -> tuple[list[str], list[list[object]]]:
    """A model's precision, recall, F1 and support per class on the scored images."""
    headers = [t(f"report.table.{k}") for k in ("class", "precision", "recall", "f1", "test_images")]
    return headers, [[c.name, t.number(c.precision, 3), t.number(c.recall, 3), t.number(c.f1, 3), c.support]
                     for c in m.test.per_class]


def subset_label(subset: str, t: Translator = EN) -> str:
    """How the report names a subset of the split ("train", "val", "test", "evaluated")."""
    return t.get(f"report.subset.{subset}", subset)


def report_command(study: Study, t: Translator = EN) -> str:
    """The command that redoes the run and writes this very report: ``study.command`` (the same in
    every language, as ``metrics.json`` keeps it), plus ``--lang`` for a report not in English."""
    if study.command and t.lang != DEFAULT:
        return f"{study.command} --lang {t.lang}"
    return study.command


def timings_line(timings: dict[str, float], t: Translator = EN) -> str:
    """"audit seconds: 1.5 s; train seconds: 1.2 min": what each step of the run took."""
    return t("report.timing.separator").join(
        t("report.timing.item", name=t.get(f"report.timing.{k}", k.replace("_", " ")),
          time=t.localize_number(fmt_seconds(v)))
        for k, v in timings.items() if v is not None)


def shortcut_table(study: Study, t: Translator = EN) -> tuple[list[str], list[list[str]]]:
    """The shortcut audit's table: per model its plain test accuracy, then with the faces masked,
    with only the faces (both on the test images with a face, against the plain accuracy on those),
    in greyscale, and chance. Empty when no model was audited."""
    headers = [t(f"report.shortcut.table.{k}") for k in ("model", "accuracy", "with_face", "face_masked",
                                                          "face_only", "greyscale", "chance")]
    rows: list[list[str]] = []

    def cell(value: float | None, n: int) -> str:  # "0.913 (66)": the same in every language
        return f"{t.number(value, 3)} ({n})"

    for m in study.models:
        a = m.shortcut
        if a is None:
            continue
        rows.append([m.name, cell(a.accuracy, a.images), cell(a.accuracy_with_face, a.images_with_face),
                     t.number(a.face_masked, 3), t.number(a.face_only, 3), cell(a.greyscale, a.greyscale_images),
                     t.number(a.chance, 3)])
    return headers, rows


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


def fmt_acc_ci(row: dict, t: Translator = EN) -> str:
    """"0.913 [0.85, 0.96]": test accuracy and its 95 % interval."""
    return t.number(row["test_accuracy"], 3) + " " + t("report.format.interval",
                                                       low=t.number(row["test_accuracy_ci_low"], 2),
                                                       high=t.number(row["test_accuracy_ci_high"], 2))


#: (header key, formatter(row, translator)) for the human-readable comparison table. Numbers are
#: formatted the English way, then given the language's decimal separator.
DISPLAY_COLUMNS: Sequence[tuple[str, Any]] = (
    ("report.table.model", lambda r, t: r["model"] + (" *" if r["selected"] else "")),
    ("report.table.val_accuracy", lambda r, t: t.number(r["val_accuracy"], 3)),
    ("report.table.test_accuracy_ci", fmt_acc_ci),
    ("report.table.macro_f1", lambda r, t: t.number(r["macro_f1"], 3)),
    ("report.table.log_loss", lambda r, t: t.number(r["log_loss"], 3)),
    ("report.table.ece", lambda r, t: t.number(r["ece"], 3)),
    ("report.table.params", lambda r, t: t.localize_number(fmt_params(r["params"]))),
    ("report.table.size_mb", lambda r, t: t.localize_number(fmt_mb(r["size_mb"]))),
    ("report.table.gflops", lambda r, t: t.localize_number(fmt_sig(r["gflops_per_image"]))),
    ("report.table.latency",
     lambda r, t: t.localize_number(f"{fmt_ms(r['latency_ms_p50'])} / {fmt_ms(r['latency_ms_p95'])}")),
    ("report.table.e2e_latency", lambda r, t: t.localize_number(fmt_ms(r["e2e_latency_ms_p50"]))),
    ("report.table.throughput", lambda r, t: t.number(r["throughput_ips"], 1)),
    ("report.table.train_time", lambda r, t: t.localize_number(fmt_seconds(r["train_seconds"]))),
)
#: Shown after the others when the face survey ran.
FACE_DISPLAY_COLUMNS: Sequence[tuple[str, Any]] = (
    ("report.table.face_accuracy",
     lambda r, t: f"{t.number(r['test_accuracy_face'], 3)} / {t.number(r['test_accuracy_noface'], 3)}"),
)


def display_table(study: Study, t: Translator = EN) -> tuple[list[str], list[list[str]]]:
    rows = study.rows()
    columns = list(DISPLAY_COLUMNS)
    if any(r["face_detection_rate"] is not None for r in rows):
        columns += FACE_DISPLAY_COLUMNS
    headers = [t(key) for key, _ in columns]
    return headers, [[f(r, t) for _, f in columns] for r in rows]


def format_terminal_table(study: Study) -> str:
    """Fixed-width text table; ``*`` marks the served model (chosen on the training and validation images). Always
    English, like every line the CLI prints."""
    headers, body = display_table(study, EN)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    if any(r["selected"] for r in study.rows()):
        out.append(EN("report.table.selected_footnote"))
    return "\n".join(out)


# ---- calibration ---------------------------------------------------------------------------------

def calibration_table(study: Study, t: Translator = EN) -> tuple[list[str], list[list[str]]]:
    """Per model: its temperature(s) (fitted on the validation split) and the scored images'
    log-loss and ECE before -> after calibration. No rows when no model has the "before" figures
    (a metrics.json from before calibration)."""
    headers = [t("report.table.model"), t("report.calibration.temperature"), t("report.calibration.log_loss"),
               t("report.calibration.ece")]
    rows = []
    for m in study.models:
        test = m.test
        if test.log_loss_uncalibrated is None and test.ece_uncalibrated is None:
            continue
        c = m.calibration
        temperature = t.number(c.temperature if c else 1.0, 2)
        for part, value in (c.part_temperatures().items() if c is not None else ()):  # e.g. a face head's
            temperature += " / " + t(f"report.calibration.{part}", temperature=t.number(value, 2))
        if c is None:
            temperature += " " + t("report.calibration.none")
        rows.append([m.name, temperature,
                     f"{t.number(test.log_loss_uncalibrated, 3)} → {t.number(test.log_loss, 3)}",
                     f"{t.number(test.ece_uncalibrated, 3)} → {t.number(test.ece, 3)}"])
    return headers, rows


# ---- the ensemble (compare) ---------------------------------------------------------------------

def ensemble_table(study: Study, t: Translator = EN) -> tuple[list[str], list[list[str]]]:
    """Each candidate of compare's ensemble (weight, its own validation figures, latency), then the
    mix; no rows when no ensemble was tried."""
    info = study.ensemble
    if info is None or not info.members:
        return [], []
    headers = [t("report.ensemble.col.model"), t("report.ensemble.col.weight"), t("report.ensemble.col.val_log_loss"),
               t("report.ensemble.col.val_accuracy"), t("report.ensemble.col.latency")]
    rows = [[m.name, t.number(m.weight, 2), t.number(m.val_log_loss, 4), t.number(m.val_accuracy, 3),
             t.localize_number(fmt_ms(m.latency_ms))] for m in info.members]
    if info.val_log_loss is not None:
        rows.append([info.name or t("report.ensemble.mix_row"), t.number(1.0, 2), t.number(info.val_log_loss, 4),
                     t.number(info.val_accuracy, 3), t.localize_number(fmt_ms(info.member_latency_ms))])
    return headers, rows


# ---- the choice of the served model (issue 25) ---------------------------------------------------

def choice_table(study: Study, t: Translator = EN) -> tuple[list[str], list[list[str]]]:
    """Every candidate of the choice with its evidence, the served one first (no rows for a run from
    before the rule, or an ``evaluate``)."""
    selection = study.selection
    if selection is None or not selection.candidates:
        return [], []
    people = selection.people
    headers = [t("report.choice.col.candidate"), t("report.choice.col.kind"), t("report.choice.col.val"),
               t("report.choice.col.cv"), t("report.choice.col.difference")]
    if people:
        headers.append(t("report.choice.col.strangers"))
    headers.append(t("report.choice.col.params"))
    order = sorted(selection.candidates, key=lambda c: (c.name != selection.best, not c.eligible, not c.tied))
    rows = []
    for c in order:
        marks = [t("report.choice.mark.chosen")] if c.name == selection.best else []
        if c.name != selection.best and c.tied:
            marks.append(t("report.choice.mark.tied"))
        if people and not c.eligible:
            marks.append(t("report.choice.mark.ineligible"))
        name = c.name + (f" ({', '.join(marks)})" if marks else "")
        val = f"{t.number(c.val_accuracy, 3)} ({c.val_images})"
        cv = (f"{t.number(c.cv_accuracy, 3)} ± {t.number(c.cv_accuracy_std, 3)}" if c.cv_accuracy is not None
              else "–")
        diff = ("–" if c.difference is None else
                f"{t.number(c.difference, 3)} [{t.number(c.difference_low, 3)}, {t.number(c.difference_high, 3)}]")
        row = [name, t(f"report.choice.kind.{c.kind}"), val, cv, diff]
        if people:
            row.append("–" if c.strangers_accepted is None else
                       f"{t.percent(c.strangers_accepted, 0)} ({c.strangers})")
        row.append(t.localize_number(fmt_params(c.parameters)))
        rows.append(row)
    return headers, rows


def choice_notes(study: Study, t: Translator = EN) -> list[str]:
    """The rule, and where the evidence came from (strangers, out-of-fold estimates, composites)."""
    selection = study.selection
    if selection is None or not selection.candidates:
        return []
    out = [t("report.choice.rule", criterion=selection.criterion)]
    if selection.people and selection.strangers_source:
        out.append(t("report.choice.strangers_note", source=selection.strangers_source,
                     keep=t.percent(selection.keep, 0), limit=t.percent(selection.max_strangers, 0)))
    methods = sorted({c.cv_method for c in selection.candidates if c.cv_method})
    if methods:
        out.append(t("report.choice.cv_note", method="; ".join(methods)))
    if any(c.kind != "model" for c in selection.candidates):
        out.append(t("report.choice.composites_note"))
    return out


# ---- "none of these" (issue 14) ------------------------------------------------------------------

def open_set_table(study: Study, t: Translator = EN) -> tuple[list[str], list[list[str]]]:
    """Per model with a measured rejection rule: method, AUROC, unknowns accepted, known images kept
    and their accuracy (rows empty when no model was measured)."""
    headers = [t("report.table.model"), t("report.open_set.method"), t("report.open_set.auroc"),
               t("report.open_set.accept_rate"), t("report.open_set.kept_rate"), t("report.open_set.accuracy_kept"),
               t("report.open_set.accuracy_all")]
    rows = []
    for m in study.models:
        o = m.open_set
        if o is None:
            continue
        method = t("report.open_set.method_folder") if o.method == "unknown folder" else t("report.open_set.method_loco")

        def pct(value: float | None) -> str:
            return t.number(None if value is None else 100 * value, 1)

        rows.append([m.name, method, t.number(o.auroc, 3), pct(o.unknown_accept_rate), pct(o.known_kept_rate),
                     pct(o.known_accuracy_kept), pct(m.test.accuracy)])
    return headers, rows
