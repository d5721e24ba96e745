"""``report.md``: the same findings as the HTML, as Markdown with the figures linked (not embedded),
in the language of the translator given."""
from __future__ import annotations

from typing import Iterable

from image_classifier.i18n import Translator, translator
from image_classifier.report import narrative
from image_classifier.report.tables import calibration_table, choice_notes, choice_table
from image_classifier.report.tables import (
    backend_notes, backend_table, display_table, ensemble_table, face_survey_table, open_set_table, per_class_table,
    report_command, subset_label, timings_line,
)
from image_classifier.report.tables import shortcut_table
from image_classifier.report.suspects import caption as suspect_caption
from image_classifier.report.suspects import summary as suspect_summary
from image_classifier.results import Study


def md(value: object) -> str:
    """Escape text for a Markdown table cell or paragraph: no raw HTML, no broken table rows.

    Only ``&`` and ``<`` are escaped: without ``<`` no tag can open, and a ``>`` left as is keeps
    text such as "load 5.0 -> 5.2" readable in the raw file."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|").replace("\n", " ")


def _table(headers: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    headers = list(headers)
    out = ["| " + " | ".join(md(h) for h in headers) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(study: Study, t: Translator | None = None, *, title: str | None = None) -> str:
    """The whole report as Markdown, in ``t``'s language (default English); ``title``: its heading
    (default: ``study.title``)."""
    t = t or translator("en")
    title = title or study.title or t("report.title.default")
    lines = [f"# {md(title)}", ""]
    lines += [f"> **{t('report.md.warning')}** {md(a)}\n" for a in study.alerts]
    cannot = narrative.cannot_reject_sentence(study.selection, t)
    if cannot:
        lines += [f"> **{t('report.md.warning')}** {md(cannot)}", ""]
    lines += [f"**{md(narrative.headline(study, t))}**", ""]
    why = narrative.choice_sentence(study.selection, t) if study.selection is not None else ""
    if why:
        lines += [md(why), ""]
    headers, body = display_table(study, t)
    lines += [f"## {t('report.heading.comparison')}", "", *_table(headers, body), ""]
    if study.selection is not None and any(m.name == study.selection.best for m in study.models):
        lines += ["\\* " + md(t("report.md.selected_note")), ""]
    summary = narrative.significance_summary(study, t)
    if summary:
        lines += [md(summary), ""]
        lines += [f"- {md(line)}" for line in narrative.significance_lines(study, t)] + [""]
    for note in (narrative.uncertainty_note(study, t), narrative.published_note(study, t),
                 narrative.calibration_note(study, t), narrative.timing_note(study, t)):
        if note:
            lines += [f"> {md(note)}", ""]
    for key in ("summary", "reliability"):
        if study.plots.get(key):
            lines += [f"![{t(f'report.alt.{key}')}]({study.plots[key]})", ""]

    ch_headers, ch_rows = choice_table(study, t)
    if ch_rows:
        lines += [f"## {t('report.heading.choice')}", "", *_table(ch_headers, ch_rows), ""]
        for note in choice_notes(study, t):
            lines += [f"> {md(note)}", ""]

    c_headers, c_rows = calibration_table(study, t)
    if c_rows:
        lines += [f"## {t('report.heading.calibration')}", "", *_table(c_headers, c_rows), "",
                  md(t("report.calibration.help")), ""]
        verdict = narrative.calibration_verdict(study, t)
        if verdict:
            lines += [f"> {md(verdict)}", ""]
        for m in study.models:
            if m.plots.get("calibration"):
                lines += [f"![{md(t('report.html.calibration.alt', model=m.name))}]({m.plots['calibration']})", ""]

    b_headers, b_rows = backend_table(study, t)
    if b_rows:
        lines += [f"## {t('report.heading.backends')}", "", *_table(b_headers, b_rows), "",
                  md(t("report.backends.help")), ""]
        lines += [f"- {md(n)}" for n in backend_notes(study, t)] + [""]

    s_headers, s_rows = shortcut_table(study, t)
    if s_rows:
        lines += [f"## {t('report.heading.shortcut')}", "", md(t("report.shortcut.intro")), "",
                  *_table(s_headers, s_rows), ""]
        lines += [f"- {md(line)}" for line in narrative.shortcut_sentences(study, t)] + [""]
        if study.plots.get("shortcut_example"):
            lines += [f"![{t('report.shortcut.example_alt')}]({study.plots['shortcut_example']})", "",
                      md(t("report.shortcut.example_caption")), ""]
    ensemble_text = narrative.ensemble_sentences(study, t)
    if ensemble_text:
        e_headers, e_rows = ensemble_table(study, t)
        lines += [f"## {t('report.heading.ensemble')}", "", md(" ".join(ensemble_text[:-1])), ""]
        lines += (_table(e_headers, e_rows) + [""]) if e_rows else []
        lines += [f"> {md(ensemble_text[-1])}", ""]
    o_headers, o_rows = open_set_table(study, t)
    if o_rows:
        lines += [f"## {t('report.heading.open_set')}", "", *_table(o_headers, o_rows), "",
                  md(narrative.open_set_note(study, t)), "", md(t("report.open_set.help")), ""]

    lines += [f"## {t('report.heading.models')}", ""]
    for m in study.models:
        lines += [f"### {md(m.name)}", ""]
        for key in ("confusion", "curves", "errors"):
            if m.plots.get(key):
                lines += [f"![{t(f'report.alt.{key}')}]({m.plots[key]})", ""]
        lines += _table(*per_class_table(m, t))
        lines += ["", t("report.md.misclassified", errors=len(m.errors), n=m.test.n), ""]
        if m.plots.get("errors") and any(e.overlay for e in m.errors):  # issue 14: why, beside each mistake
            lines += [t("report.html.errors.overlays"), ""]

    data = study.data
    lines += [f"## {t('report.heading.data')}", ""]
    if data.root:
        lines += [t("report.md.folder", root=f"`{data.root}`", images=data.num_images, classes=len(data.classes)), ""]
    sizes = data.split.sizes
    if sizes:
        subsets = list(sizes)
        classes = list(data.classes or sorted({c for s in subsets for c in sizes[s]}))
        rows = [[c, *[sizes[s].get(c, 0) for s in subsets]] for c in classes]
        rows.append([t("report.table.total"), *[sum(sizes[s].values()) for s in subsets]])
        lines += _table([t("report.table.class"), *[subset_label(s, t) for s in subsets]], rows) + [""]
    if data.duplicates is not None:
        for text in narrative.duplicate_sentences(data.duplicates, t):
            if text:
                lines += [md(text), ""]
    faces = face_survey_table(study, t)
    if faces:
        lines += [md(faces[0]), ""] + _table(faces[1], faces[2]) + [""]
    suspects = data.faces.suspect_labels if data.faces is not None else None
    if suspects is not None:
        lines += [f"### {t('report.heading.suspects')}", "", md(suspect_summary(suspects, t)), ""]
        lines += [f"- {md(e['path'])}: {md(suspect_caption(e, t))}" for e in suspects] + ([""] if suspects else [])
    lines += [t("report.md.warnings"), ""] + ([f"- {md(w)}" for w in data.warnings]
                                              or [f"- {t('report.format.none')}"]) + [""]

    lines += [f"## {t('report.heading.machine')}", ""]
    rows = [[t.get(f"report.machine.{k}", k), v] for k, v in study.environment.machine.items()]
    rows += [[k, v] for k, v in study.environment.versions.items()]
    if rows:
        lines += _table([t("report.table.item"), t("report.table.value")], rows) + [""]
    lines += [f"## {t('report.heading.reproduce')}", "", "```", report_command(study, t), "```", ""]
    if study.timings:
        lines += [timings_line(study.timings, t), ""]
    return "\n".join(lines)
