"""``report.html``: one self-contained file (inline CSS, PNGs as data URIs) that opens from disk.

Every string that came from data (class names are folder names, and a folder may be called
``<script>``) goes through :func:`esc`. Nothing is loaded from the network: no fonts, scripts or
stylesheets, so the file renders the same offline, in an e-mail attachment or years later.
Its text is in the language of the translator given (``<html lang>`` says which); class, model
and file names are values in it, never translated.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Iterable

from image_classifier.i18n import Translator, translator
from image_classifier.report import narrative
from image_classifier.report.tables import calibration_table, choice_notes, choice_table
from image_classifier.report.tables import (
    backend_notes,
    backend_table,
    display_table,
    ensemble_table,
    face_survey_table,
    open_set_table,
    per_class_table,
    fmt_mb,
    fmt_ms,
    fmt_params,
    fmt_seconds,
    per_image_ms,
    report_command,
    subset_label,
    timings_line,
)
from image_classifier.report.tables import shortcut_table
from image_classifier.report.suspects import CSS as SUSPECTS_CSS
from image_classifier.report.suspects import esc, suspects_html
from image_classifier.results import TEST_IMAGES, ModelResult, Study

#: The split's subsets in the order the data table shows them (any other after them).
SUBSET_ORDER = ("train", "val", "test")

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


def _answer(study: Study, t: Translator) -> str:
    rows = study.rows()
    parts = [f'<p class="alert">{esc(a)}</p>' for a in study.alerts]
    cannot = narrative.cannot_reject_sentence(study.selection, t)
    if cannot:
        parts.append(f'<p class="alert" id="cannot-reject">{esc(cannot)}</p>')
    parts.append(f"<p><strong>{esc(narrative.headline(study, t))}</strong></p>")
    why = narrative.choice_sentence(study.selection, t) if study.selection is not None else ""
    if why:
        parts.append(f'<p id="why">{esc(why)} <a href="#choice">{esc(t("report.heading.choice"))}</a></p>')
    if len(rows) > 1:
        top = max(rows, key=lambda r: r["test_accuracy"])
        facts = [t("report.html.fact.highest", model=top["model"], accuracy=t.percent(top["test_accuracy"], 1))]
        timed = [r for r in rows if per_image_ms(r) is not None]
        if timed:
            fast = min(timed, key=per_image_ms)
            facts.append(t("report.html.fact.fastest", model=fast["model"],
                           ms=t.localize_number(fmt_ms(per_image_ms(fast)))))
        sized = [r for r in rows if r["size_mb"] is not None]
        if sized:
            small = min(sized, key=lambda r: r["size_mb"])
            facts.append(t("report.html.fact.smallest", model=small["model"],
                           mb=t.localize_number(fmt_mb(small["size_mb"]))))
        parts.append("<p>" + esc("; ".join(facts) + ".") + "</p>")
    summary = narrative.significance_summary(study, t)
    if summary:
        parts.append(f"<p>{esc(summary)}</p>")
    return '<section class="card answer">' + "".join(parts) + "</section>"


def _comparison(study: Study, run_dir: Path, t: Translator) -> str:
    headers, body = display_table(study, t)
    selected = ["selected" if r["selected"] else "" for r in study.rows()]
    heading = t("report.heading.comparison") if len(study.models) > 1 else t("report.heading.results")
    out = [f'<h2 id="comparison">{esc(heading)}</h2>', _table(headers, body, selected)]
    scored = (t("report.html.scored.test") if study.scored_set == TEST_IMAGES
              else t("report.html.scored.named", scored=narrative.scored_noun(study, t)))
    legend = "report.html.legend.selected" if study.selection is not None else "report.html.legend.plain"
    out.append(f'<p class="muted">{esc(t(legend, scored=scored))}</p>')
    verdicts = narrative.significance_verdicts(study, t)
    if verdicts:
        out.append(f'<h3>{esc(t("report.heading.significance"))}</h3><ul class="sig">')
        for verdict in verdicts:
            cls = "good" if verdict.significant else ""
            out.append(f'<li class="{cls}">{esc(verdict.text)}</li>')
        out.append("</ul>")
    for note in (narrative.uncertainty_note(study, t), narrative.published_note(study, t),
                 narrative.calibration_note(study, t), narrative.timing_note(study, t)):
        if note:
            out.append(f'<p class="note">{esc(note)}</p>')
    figs = [_figure(run_dir, study.plots.get(key), t(f"report.html.{key}.alt"), t(f"report.html.{key}.caption"))
            for key in ("summary", "reliability")]
    out.append('<div class="figs">' + "".join(figs) + "</div>")
    return "".join(out)


def _calibration(study: Study, run_dir: Path, t: Translator) -> str:
    """Each model's temperature, log-loss and ECE before -> after, whether the served probabilities
    are calibrated, and a reliability diagram per model (before and after)."""
    headers, rows = calibration_table(study, t)
    if not rows:
        return ""
    out = [f'<h2 id="calibration">{esc(t("report.heading.calibration"))}</h2>', _table(headers, rows)]
    out.append(f'<p class="muted">{esc(t("report.calibration.help"))}</p>')
    verdict = narrative.calibration_verdict(study, t)
    if verdict:
        out.append(f'<p class="note">{esc(verdict)}</p>')
    figs = [_figure(run_dir, m.plots.get("calibration"), t("report.html.calibration.alt", model=m.name))
            for m in study.models if m.plots.get("calibration")]
    if figs:
        out.append('<div class="figs">' + "".join(figs) + "</div>")
    return "".join(out)


def _backends(study: Study, t: Translator) -> str:
    headers, rows = backend_table(study, t)
    if not rows:
        return ""
    out = [f'<h2 id="backends">{esc(t("report.heading.backends"))}</h2>', _table(headers, rows)]
    out.append(f'<p class="muted">{esc(t("report.backends.help"))}</p>')
    notes = backend_notes(study, t)
    if notes:
        out.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return "".join(out)


def _shortcut(study: Study, run_dir: Path, t: Translator) -> str:
    """The shortcut audit: its table, what each model reads in plain sentences, one example photo."""
    headers, rows = shortcut_table(study, t)
    if not rows:
        return ""
    out = [f'<h2 id="shortcut">{esc(t("report.heading.shortcut"))}</h2>',
           f'<p>{esc(t("report.shortcut.intro"))}</p>', _table(headers, rows)]
    sentences = narrative.shortcut_sentences(study, t)
    if sentences:
        out.append('<ul class="sig">' + "".join(f"<li>{esc(s)}</li>" for s in sentences) + "</ul>")
    out.append('<div class="figs">' + _figure(run_dir, study.plots.get("shortcut_example"),
                                              t("report.shortcut.example_alt"), t("report.shortcut.example_caption"))
               + "</div>")
    return "".join(out)


def _choice(study: Study, t: Translator) -> str:
    """Every candidate of the choice with its evidence, and the rule."""
    headers, rows = choice_table(study, t)
    if not rows:
        return ""
    out = [f'<h2 id="choice">{esc(t("report.heading.choice"))}</h2>']
    why = narrative.choice_sentence(study.selection, t)  # type: ignore[arg-type]
    if why:
        out.append(f"<p>{esc(why)}</p>")
    out.append(_table(headers, rows))
    out += [f'<p class="muted">{esc(note)}</p>' for note in choice_notes(study, t)]
    return "".join(out)


def _ensemble(study: Study, t: Translator) -> str:
    text = narrative.ensemble_sentences(study, t)
    if not text:
        return ""
    out = [f'<h2 id="ensemble">{esc(t("report.heading.ensemble"))}</h2>', f"<p>{esc(' '.join(text[:-1]))}</p>"]
    headers, rows = ensemble_table(study, t)
    if rows:
        out.append(_table(headers, rows))
    out.append(f'<p class="muted">{esc(text[-1])}</p>')
    return "".join(out)


def _open_set(study: Study, t: Translator) -> str:
    """"None of these": how well each model's rejection rule tells known from unknown images."""
    headers, rows = open_set_table(study, t)
    if not rows:
        return ""
    return "".join([f'<h2 id="unknown">{esc(t("report.heading.open_set"))}</h2>', _table(headers, rows),
                    f"<p>{esc(narrative.open_set_note(study, t))}</p>",
                    f'<p class="muted">{esc(t("report.open_set.help"))}</p>'])


def _model_section(m: ModelResult, study: Study, run_dir: Path, t: Translator) -> str:
    test, speed, val, training = m.test, m.speed, m.validation, m.training
    selected = study.selection is not None and study.selection.best == m.name
    title = esc(m.name) + (esc(t("report.html.model.selected")) if selected else "")
    facts = [
        t("report.html.model.test_accuracy", accuracy=t.percent(test.accuracy, 1),
          interval=t("report.format.interval", low=t.percent(test.accuracy_ci[0], 1),
                     high=t.percent(test.accuracy_ci[1], 1))),
        t("report.html.model.macro_f1", value=t.number(test.macro_f1, 3)),
        t("report.html.model.log_loss", value=t.number(test.log_loss, 3)),
        t("report.html.model.ece", value=t.number(test.ece, 3)),
    ]
    if val.accuracy is not None:
        facts.append(t("report.html.model.validation", accuracy=t.percent(val.accuracy, 1),
                       epoch="?" if val.best_epoch is None else val.best_epoch))
    if speed is not None:
        trained = speed.trainable_params
        facts.append(t("report.html.model.params", params=t.localize_number(fmt_params(speed.params)))
                     + (t("report.html.model.trained_params", trained=t.localize_number(fmt_params(trained)))
                        if trained is not None and trained < (speed.params or 0) else ""))
        if speed.flops_per_image is not None:
            facts.append(t("report.html.model.gflops", gflops=t.number(speed.flops_per_image / 1e9, 2)))
    if m.backend is not None:
        facts.append(t("report.html.model.backend", backend=m.backend.name, reason=m.backend.reason))
    if training.seconds is not None:
        facts.append(t("report.html.model.trained_in", time=t.localize_number(fmt_seconds(training.seconds))))
    if training.peak_rss_mb is not None:
        facts.append(t("report.html.model.peak_memory", mb=t.number(training.peak_rss_mb, 0)))
    if m.model_dir:
        facts.append(t("report.html.model.saved_in", path=m.model_dir))
    out = [f'<section class="card" id="{esc(anchor(m.name))}"><h3>{title}</h3>',
           f'<p class="muted">{esc("; ".join(facts))}</p>']
    plots = m.plots
    out += ['<div class="figs">',
            _figure(run_dir, plots.get("confusion"), t("report.html.confusion.alt", model=m.name),
                    t("report.html.confusion.caption")),
            '<div class="side">' + _table(*per_class_table(m, t)) + "</div>",
            "</div>",
            _figure(run_dir, plots.get("curves"), t("report.html.curves.alt", model=m.name),
                    t("report.html.curves.caption"))]
    errors = m.errors
    if errors:
        caption = t("report.html.errors.caption")
        if any(e.overlay for e in errors):  # issue 14: why, beside each mistake
            caption += " " + t("report.html.errors.overlays")
        out.append(_figure(run_dir, plots.get("errors"), t("report.html.errors.alt", model=m.name), caption))
        rows = [[e.rel_path or e.path, e.true, e.predicted, t.percent(e.confidence, 1)]
                for e in sorted(errors, key=lambda e: -e.confidence)]
        out.append(f"<details><summary>{esc(t('report.html.errors.all', count=len(errors)))}</summary>"
                   + _table([t("report.table.file"), t("report.table.true"), t("report.table.predicted"),
                             t("report.table.confidence")], rows) + "</details>")
    else:
        out.append(f"<p>{esc(t('report.html.errors.none'))}</p>")
    out.append("</section>")
    return "".join(out)


def _duplicate_kind(kind: str, t: Translator) -> str:
    """A group's kind ("exact", "near", "exact + near", "duplicate") in ``t``'s language."""
    return " + ".join(t.get(f"report.data.duplicate_kind.{k}", k) for k in kind.split(" + "))


def _suspects(study: Study, run_dir: Path, t: Translator) -> str:
    """The photos whose faces are probably not their folder's person, with the face that says so."""
    entries = study.data.faces.suspect_labels if study.data.faces is not None else None
    if entries is None:
        return ""

    def src(entry: dict) -> str | None:
        rel = entry.get("thumbnail")
        if not rel or not (run_dir / rel).is_file():
            return None
        return "data:image/jpeg;base64," + base64.b64encode((run_dir / rel).read_bytes()).decode("ascii")

    return f"<h3>{esc(t('report.heading.suspects'))}</h3>" + suspects_html(entries, src, t)


def _data_section(study: Study, t: Translator, run_dir: Path) -> str:
    data = study.data
    out = [f'<h2 id="data">{esc(t("report.heading.data"))}</h2>']
    if data.root:
        out.append("<p>" + t.html("report.html.folder", markup={"root": f"<code>{esc(data.root)}</code>"},
                                  images=data.num_images, classes=len(data.classes)) + "</p>")
    split = data.split
    sizes = split.sizes
    if sizes:
        subsets = [s for s in SUBSET_ORDER if s in sizes] + [s for s in sizes if s not in SUBSET_ORDER]
        classes = list(data.classes or sorted({c for s in subsets for c in sizes[s]}))
        rows = [[c, *[sizes[s].get(c, 0) for s in subsets], sum(sizes[s].get(c, 0) for s in subsets)] for c in classes]
        rows.append([t("report.table.total"), *[sum(sizes[s].values()) for s in subsets],
                     sum(sum(sizes[s].values()) for s in subsets)])
        out.append(_table([t("report.table.class"), *[subset_label(s, t) for s in subsets], t("report.table.all")],
                          rows))
        desc = []
        if split.seed is not None:
            desc.append(t("report.html.split.stratified", seed=split.seed))
        if split.path:
            desc.append(t("report.html.split.manifest", path=split.path))
        if split.manifest_sha256:
            desc.append(t("report.html.split.sha256", digest=split.manifest_sha256[:16]))
        if desc:
            out.append(f'<p class="muted">{esc(t("report.html.split.same", description="; ".join(desc)))}</p>')
    dups = data.duplicates
    if dups is not None:
        out.append(f"<h3>{esc(t('report.heading.duplicates'))}</h3>")
        for text in narrative.duplicate_sentences(dups, t):
            if text:
                out.append(f"<p>{esc(text)}</p>")
        groups = dups.groups
        if groups:
            rows = [[_duplicate_kind(g.kind, t), ", ".join(g.files),
                     ", ".join(subset_label(s, t) for s in g.subset.split(", ")) if g.subset else ""]
                    for g in groups]
            out.append(f"<details><summary>{esc(t('report.html.duplicates.groups', count=len(groups)))}</summary>"
                       + _table([t("report.table.kind"), t("report.table.files"), t("report.table.kept_together_in")],
                                rows) + "</details>")
    faces = face_survey_table(study, t)
    if faces:
        out.append(f"<h3>{esc(t('report.heading.faces'))}</h3><p>{esc(faces[0])}</p>" + _table(faces[1], faces[2]))
    out.append(_suspects(study, run_dir, t))
    unreadable = data.unreadable
    if unreadable:
        out.append(f"<details><summary>{esc(t('report.html.unreadable', count=len(unreadable)))}</summary>"
                   + _table([t("report.table.file"), t("report.table.reason")],
                            [[u["path"], u["reason"]] for u in unreadable]) + "</details>")
    warnings = data.warnings
    out.append(f"<h3>{esc(t('report.heading.data_warnings'))}</h3>")
    if warnings:
        out.append("<ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>")
    else:
        out.append(f"<p>{esc(t('report.html.warnings.none'))}</p>")
    return "".join(out)


def _machine_section(study: Study, t: Translator) -> str:
    out = [f'<h2 id="machine">{esc(t("report.heading.machine"))}</h2>']
    rows = [(t.get(f"report.machine.{k}", k), v) for k, v in study.environment.machine.items()]
    rows += [(k, v) for k, v in study.environment.versions.items()]
    if rows:
        out.append(_kv_table(rows))
    speed_cfg = study.speed_config
    if speed_cfg:
        out.append('<p class="muted">' + t.html("report.html.speed_config", warmup=speed_cfg.get("warmup"),
                                                 repeats=speed_cfg.get("repeats"),
                                                 throughput_repeats=speed_cfg.get("throughput_repeats"),
                                                 throughput_batch=speed_cfg.get("throughput_batch")) + "</p>")
    return "".join(out)


def render_html(study: Study, run_dir: Path, t: Translator | None = None, *, title: str | None = None) -> str:
    """The whole report as one HTML string, in ``t``'s language (default English); PNG paths in
    ``study`` are relative to ``run_dir``; ``title``: its heading (default: ``study.title``)."""
    t = t or translator("en")
    run_dir = Path(run_dir)
    title = title or study.title or t("report.title.default")
    first = t("report.nav.comparison") if len(study.models) > 1 else t("report.nav.results")
    # (section id, its link's text, whether the report has the section)
    sections = (("choice", "report.nav.choice", choice_table(study, t)[1]),
                ("calibration", "report.nav.calibration", calibration_table(study, t)[1]),
                ("backends", "report.nav.backends", backend_table(study, t)[1]),
                ("shortcut", "report.nav.shortcut", shortcut_table(study, t)[1]),
                ("ensemble", "report.nav.ensemble", study.ensemble is not None),
                ("unknown", "report.nav.open_set", open_set_table(study, t)[1]))
    nav = [f'<a href="#comparison">{esc(first)}</a>']
    nav += [f'<a href="#{section}">{esc(t(key))}</a>' for section, key, present in sections if present]
    nav += [f'<a href="#{esc(anchor(m.name))}">{esc(m.name)}</a>' for m in study.models]
    nav += [f'<a href="#data">{esc(t("report.nav.data"))}</a>', f'<a href="#machine">{esc(t("report.nav.machine"))}</a>',
            f'<a href="#reproduce">{esc(t("report.nav.reproduce"))}</a>']
    created = study.created_utc
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{esc(t.lang)}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}{SUSPECTS_CSS}</style></head><body><main>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">{esc(created)} · {esc(", ".join(study.data.classes))}</p>',
        f"<nav>{' '.join(nav)}</nav>",
        _answer(study, t),
        _comparison(study, run_dir, t),
        _choice(study, t),
        _calibration(study, run_dir, t),
        _backends(study, t),
        _shortcut(study, run_dir, t),
        _ensemble(study, t),
        _open_set(study, t),
        f'<h2 id="models">{esc(t("report.heading.models"))}</h2>',
        *[_model_section(m, study, run_dir, t) for m in study.models],
        _data_section(study, t, run_dir),
        _machine_section(study, t),
        f'<h2 id="reproduce">{esc(t("report.heading.reproduce"))}</h2>',
        f"<pre>{esc(report_command(study, t))}</pre>",
    ]
    if study.timings:
        parts.append('<p class="muted">' + esc(timings_line(study.timings, t)) + "</p>")
    parts.append("</main></body></html>")
    return "\n".join(p for p in parts if p)
