"""``report.html``: one self-contained file (inline CSS, PNGs as data URIs) that opens from disk.

Every string that came from data (class names are folder names, and a folder may be called
``<script>``) goes through :func:`esc`. Nothing is loaded from the network: no fonts, scripts or
stylesheets, so the file renders the same offline, in an e-mail attachment or years later.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Iterable

from image_classifier.report import narrative
from image_classifier.report.tables import (
    BACKEND_HELP,
    backend_notes,
    backend_table,
    display_table,
    face_survey_table,
    fmt_mb,
    fmt_ms,
    fmt_num,
    fmt_params,
    fmt_seconds,
    per_image_ms,
)
from image_classifier.results import TEST_IMAGES, ModelResult, Study

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2125;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:16px}
h1{font-size:1.6em;margin:.3em 0}
h2{font-size:1.3em;margin:1.6em 0 .5em;border-bottom:2px solid #d0d7de;padding-bottom:.2em}
h3{font-size:1.1em;margin:1.2em 0 .4em}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;margin:12px 0}
.answer{border-left:6px solid #0072B2;font-size:1.08em}
.answer strong{font-size:1.1em}
.muted{color:#57606a;font-size:.92em}
.alert{background:#ffebe9;border-left:4px solid #cf222e;padding:8px 12px;font-weight:600}
.note{background:#fff8e6;border-left:4px solid #E69F00;padding:8px 12px;margin:10px 0}
.wrap{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.84em;background:#fff}
th,td{padding:4px 5px;border:1px solid #d0d7de;text-align:right;white-space:nowrap}
th{background:#eef1f4}
th[scope=row]{text-align:left;font-weight:600}
td.l{text-align:left;white-space:normal}
td:first-child,th:first-child{text-align:left;position:sticky;left:0;background:inherit}
tbody tr{background:#fff}
tr.selected td{background:#e8f3fb;font-weight:600}
figure{margin:8px 0}
figure img{max-width:100%;height:auto;border:1px solid #e1e4e8;background:#fff}
figcaption{font-size:.85em;color:#57606a}
.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.figs figure{flex:1 1 320px;min-width:0;max-width:620px}
.side{flex:1 1 300px;min-width:0}
pre{background:#1d2125;color:#f0f3f6;padding:10px;border-radius:6px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
ul.sig li{margin:.2em 0}
.good{color:#1a7f37}.bad{color:#cf222e}
nav{display:flex;flex-wrap:wrap;gap:4px 14px}
details summary{cursor:pointer;color:#0b5cad}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _figure(run_dir: Path, rel: str | None, alt: str, caption: str = "") -> str:
    if not rel or not (run_dir / rel).is_file():
        return ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{_img(run_dir / rel, alt)}{cap}</figure>"


def _table(headers: Iterable[str], rows: Iterable[Iterable[object]], row_classes: Iterable[str] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    classes = list(row_classes) if row_classes is not None else None
    for i, row in enumerate(rows):
        cls = f' class="{esc(classes[i])}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    return f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _kv_table(rows: Iterable[tuple[object, object]]) -> str:
    body = "".join(f'<tr><th scope="row">{esc(k)}</th><td class="l">{esc(v)}</td></tr>' for k, v in rows)
    return f'<div class="wrap"><table><tbody>{body}</tbody></table></div>'


def anchor(name: str) -> str:
    """An id attribute value from any model name (escaped by the caller)."""
    return "model-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _answer(study: Study) -> str:
    rows = study.rows()
    parts = [f'<p class="alert">{esc(a)}</p>' for a in study.alerts]
    parts.append(f"<p><strong>{esc(narrative.headline(study))}</strong></p>")
    if len(rows) > 1:
        facts = []
        top = max(rows, key=lambda r: r["test_accuracy"])
        facts.append(f"highest test accuracy: {top['model']} ({top['test_accuracy']:.1%})")
        timed = [r for r in rows if per_image_ms(r) is not None]
        if timed:
            fast = min(timed, key=per_image_ms)
            facts.append(f"fastest: {fast['model']} ({fmt_ms(per_image_ms(fast))} ms per image)")
        sized = [r for r in rows if r["size_mb"] is not None]
        if sized:
            small = min(sized, key=lambda r: r["size_mb"])
            facts.append(f"smallest: {small['model']} ({fmt_mb(small['size_mb'])} MB)")
        parts.append("<p>" + esc("; ".join(facts) + ".") + "</p>")
    summary = narrative.significance_summary(study)
    if summary:
        parts.append(f"<p>{esc(summary)}</p>")
    return '<section class="card answer">' + "".join(parts) + "</section>"


def _comparison(study: Study, run_dir: Path) -> str:
    headers, body = display_table(study)
    selected = ["selected" if r["selected"] else "" for r in study.rows()]
    heading = "Comparison (test split)" if len(study.models) > 1 else "Results"
    out = [f'<h2 id="comparison">{heading}</h2>', _table(headers, body, selected)]
    scored = ("accuracy on the held-out test split" if study.scored_set == TEST_IMAGES
              else f"accuracy on the {study.scored_set} scored here")
    out.append(f'<p class="muted">test acc: {esc(scored)} with its 95 % bootstrap '
               "interval. val acc: accuracy on the validation split during training"
               + (", which chose the best model (*). " if study.selection is not None else ". ") +
               "ECE: expected calibration error. ms/img: model-only latency per image at batch 1 "
               "(median / 95th percentile); file→label: reading, decoding, resizing and classifying one "
               "JPEG. img/s @32: throughput at batch 32. Measured on the machine below.</p>")
    lines = narrative.significance_lines(study)
    if lines:
        out.append("<h3>Which differences are real?</h3><ul class=\"sig\">")
        for line in lines:
            cls = "good" if " is more accurate than " in line else ""
            out.append(f'<li class="{cls}">{esc(line)}</li>')
        out.append("</ul>")
    for note in (narrative.uncertainty_note(study), narrative.published_note(study), narrative.calibration_note(study),
                 narrative.timing_note(study)):
        if note:
            out.append(f'<p class="note">{esc(note)}</p>')
    plots = study.plots
    figs = [
        _figure(run_dir, plots.get("summary"), "accuracy against latency, per model",
                "Test accuracy (bars: 95 % CI) against latency; the outlined marker is the selected model."),
        _figure(run_dir, plots.get("reliability"), "reliability diagram",
                "Reliability: below the diagonal means over-confident."),
    ]
    out.append('<div class="figs">' + "".join(figs) + "</div>")
    return "".join(out)


def _backends(study: Study) -> str:
    headers, rows = backend_table(study)
    if not rows:
        return ""
    out = ['<h2 id="backends">Inference backends</h2>', _table(headers, rows)]
    out.append(f'<p class="muted">{esc(BACKEND_HELP)}</p>')
    notes = backend_notes(study)
    if notes:
        out.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return "".join(out)


def _model_section(m: ModelResult, study: Study, run_dir: Path) -> str:
    test, speed, val, training = m.test, m.speed, m.validation, m.training
    selected = study.selection is not None and study.selection.best == m.name
    title = esc(m.name) + (" — selected" if selected else "")
    facts = [
        f"test accuracy {test.accuracy:.1%} [{test.accuracy_ci[0]:.1%}, {test.accuracy_ci[1]:.1%}]",
        f"macro-F1 {test.macro_f1:.3f}",
        f"log-loss {fmt_num(test.log_loss)}",
        f"ECE {fmt_num(test.ece)}",
    ]
    if val.accuracy is not None:
        facts.append(f"validation accuracy {val.accuracy:.1%} (epoch {'?' if val.best_epoch is None else val.best_epoch})")
    if speed is not None:
        trained = speed.trainable_params
        facts.append(f"{fmt_params(speed.params)} parameters"
                     + (f" ({fmt_params(trained)} trained, the rest pretrained)" if trained is not None
                        and trained < (speed.params or 0) else ""))
        if speed.flops_per_image is not None:
            facts.append(f"{speed.flops_per_image / 1e9:.2f} GFLOPs per image")
    if m.backend is not None:
        facts.append(f"predictions and timings by backend {m.backend.name} ({m.backend.reason})")
    if training.seconds is not None:
        facts.append(f"trained in {fmt_seconds(training.seconds)}")
    if training.peak_rss_mb is not None:
        facts.append(f"peak process memory by the end of its training {training.peak_rss_mb:.0f} MB")
    if m.model_dir:
        facts.append(f"saved in {m.model_dir}")
    out = [f'<section class="card" id="{esc(anchor(m.name))}"><h3>{title}</h3>',
           f'<p class="muted">{esc("; ".join(facts))}</p>']
    plots = m.plots
    per_class = [[c.name, fmt_num(c.precision), fmt_num(c.recall), fmt_num(c.f1), c.support] for c in test.per_class]
    out.append('<div class="figs">')
    out.append(_figure(run_dir, plots.get("confusion"), f"confusion matrix of {m.name}",
                       "Confusion matrix on the test split (rows: true class; colour: share of the row)."))
    out.append('<div class="side">' + _table(["class", "precision", "recall", "F1", "test images"], per_class)
               + "</div>")
    out.append("</div>")
    out.append(_figure(run_dir, plots.get("curves"), f"training curves of {m.name}",
                       "Training curves; dashed lines separate training phases, the star marks the kept epoch."))
    errors = m.errors
    if errors:
        out.append(_figure(run_dir, plots.get("errors"), f"misclassified test images of {m.name}",
                           "Misclassified test images, most confident mistakes first."))
        rows = [[e.rel_path or e.path, e.true, e.predicted, f"{e.confidence:.1%}"]
                for e in sorted(errors, key=lambda e: -e.confidence)]
        out.append(f"<details><summary>All {len(errors)} misclassified test images</summary>"
                   + _table(["file", "true", "predicted", "confidence"], rows) + "</details>")
    else:
        out.append("<p>No test image was misclassified.</p>")
    out.append("</section>")
    return "".join(out)


def _data_section(study: Study) -> str:
    data = study.data
    out = ['<h2 id="data">Data</h2>']
    if data.root:
        out.append(f"<p>Folder <code>{esc(data.root)}</code>: {esc(data.num_images)} images in "
                   f"{len(data.classes)} classes.</p>")
    split = data.split
    sizes = split.sizes
    if sizes:
        subsets = [s for s in ("train", "val", "test") if s in sizes] + [s for s in sizes if s not in ("train", "val", "test")]
        classes = list(data.classes or sorted({c for s in subsets for c in sizes[s]}))
        rows = [[c, *[sizes[s].get(c, 0) for s in subsets], sum(sizes[s].get(c, 0) for s in subsets)] for c in classes]
        rows.append(["total", *[sum(sizes[s].values()) for s in subsets], sum(sum(sizes[s].values()) for s in subsets)])
        out.append(_table(["class", *subsets, "all"], rows))
        desc = []
        if split.seed is not None:
            desc.append(f"stratified split, seed {split.seed}")
        if split.path:
            desc.append(f"manifest {split.path}")
        if split.manifest_sha256:
            desc.append(f"sha256 {split.manifest_sha256[:16]}…")
        if desc:
            out.append(f'<p class="muted">{esc("; ".join(desc))}. Every model was trained, selected and tested on this same split.</p>')
    dups = data.duplicates
    if dups is not None:
        out.append("<h3>Duplicates</h3>")
        if dups.summary:
            out.append(f"<p>{esc(dups.summary)}</p>")
        if dups.policy:
            out.append(f"<p>{esc(dups.policy)}</p>")
        groups = dups.groups
        if groups:
            rows = [[g.kind, ", ".join(g.files), g.subset] for g in groups]
            out.append(f"<details><summary>{len(groups)} duplicate groups</summary>"
                       + _table(["kind", "files", "kept together in"], rows) + "</details>")
    faces = face_survey_table(study)
    if faces:
        out.append(f"<h3>Faces</h3><p>{esc(faces[0])}</p>" + _table(faces[1], faces[2]))
    unreadable = data.unreadable
    if unreadable:
        out.append(f"<details><summary>{len(unreadable)} unreadable files were left out</summary>"
                   + _table(["file", "reason"], [[u["path"], u["reason"]] for u in unreadable]) + "</details>")
    warnings = data.warnings
    out.append("<h3>Warnings from the data check</h3>")
    if warnings:
        out.append("<ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>")
    else:
        out.append("<p>None.</p>")
    return "".join(out)


def _machine_section(study: Study) -> str:
    out = ['<h2 id="machine">Machine and versions</h2>']
    rows = [(k, v) for k, v in study.environment.machine.items()]
    rows += [(k, v) for k, v in study.environment.versions.items()]
    if rows:
        out.append(_kv_table(rows))
    speed_cfg = study.speed_config
    if speed_cfg:
        out.append(f'<p class="muted">Latency: {esc(speed_cfg.get("warmup"))} warm-up calls, then up to '
                   f'{esc(speed_cfg.get("repeats"))} timed calls at batch 1; throughput: median of '
                   f'{esc(speed_cfg.get("throughput_repeats"))} batches of {esc(speed_cfg.get("throughput_batch"))}.</p>')
    return "".join(out)


def render_html(study: Study, run_dir: Path) -> str:
    """The whole report as one HTML string; PNG paths in ``study`` are relative to ``run_dir``."""
    run_dir = Path(run_dir)
    title = study.title or "Image classifier comparison"
    nav = [f'<a href="#comparison">{"Comparison" if len(study.models) > 1 else "Results"}</a>']
    if backend_table(study)[1]:
        nav.append('<a href="#backends">Backends</a>')
    nav += [f'<a href="#{esc(anchor(m.name))}">{esc(m.name)}</a>' for m in study.models]
    nav += ['<a href="#data">Data</a>', '<a href="#machine">Machine</a>', '<a href="#reproduce">Reproduce</a>']
    created = study.created_utc
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">{esc(created)} · {esc(", ".join(study.data.classes))}</p>',
        f"<nav>{' '.join(nav)}</nav>",
        _answer(study),
        _comparison(study, run_dir),
        _backends(study),
        '<h2 id="models">Models</h2>',
        *[_model_section(m, study, run_dir) for m in study.models],
        _data_section(study),
        _machine_section(study),
        '<h2 id="reproduce">Reproduce</h2>',
        f"<pre>{esc(study.command)}</pre>",
    ]
    timings = study.timings
    if timings:
        parts.append('<p class="muted">' + esc("; ".join(f"{k.replace('_', ' ')}: {fmt_seconds(v)}"
                                                       for k, v in timings.items() if v is not None)) + "</p>")
    parts.append("</main></body></html>")
    return "\n".join(p for p in parts if p)
