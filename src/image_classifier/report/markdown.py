"""``report.md``: the same findings as the HTML, as Markdown with the figures linked (not embedded)."""
from __future__ import annotations

from typing import Iterable

from image_classifier.report import narrative
from image_classifier.report.tables import (
    BACKEND_HELP, backend_notes, backend_table, display_table, face_survey_table, fmt_num, fmt_seconds,
)
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


def render_markdown(study: Study) -> str:
    title = study.title or "Image classifier comparison"
    lines = [f"# {md(title)}", ""]
    lines += [f"> **Warning:** {md(a)}\n" for a in study.alerts]
    lines += [f"**{md(narrative.headline(study))}**", ""]
    headers, body = display_table(study)
    lines += ["## Comparison (test split)", "", *_table(headers, body), ""]
    if study.selection is not None and any(m.name == study.selection.best for m in study.models):
        lines += ["\\* selected by validation accuracy (ties: validation loss); the test split played no part.", ""]
    summary = narrative.significance_summary(study)
    if summary:
        lines += [md(summary), ""]
        lines += [f"- {md(line)}" for line in narrative.significance_lines(study)] + [""]
    for note in (narrative.uncertainty_note(study), narrative.published_note(study), narrative.calibration_note(study),
                 narrative.timing_note(study)):
        if note:
            lines += [f"> {md(note)}", ""]
    for key, alt in (("summary", "accuracy vs latency"), ("reliability", "reliability diagram")):
        if study.plots.get(key):
            lines += [f"![{alt}]({study.plots[key]})", ""]

    b_headers, b_rows = backend_table(study)
    if b_rows:
        lines += ["## Inference backends", "", *_table(b_headers, b_rows), "",
                  md(BACKEND_HELP), ""]
        lines += [f"- {md(n)}" for n in backend_notes(study)] + [""]

    lines += ["## Models", ""]
    for m in study.models:
        test = m.test
        lines += [f"### {md(m.name)}", ""]
        for key, alt in (("confusion", "confusion matrix"), ("curves", "training curves"), ("errors", "misclassified")):
            if m.plots.get(key):
                lines += [f"![{alt}]({m.plots[key]})", ""]
        lines += _table(["class", "precision", "recall", "F1", "test images"],
                        [[c.name, fmt_num(c.precision), fmt_num(c.recall), fmt_num(c.f1), c.support]
                         for c in test.per_class])
        lines.append("")
        lines.append(f"{len(m.errors)} of {test.n} test images misclassified.")
        lines.append("")

    data = study.data
    lines += ["## Data", ""]
    if data.root:
        lines += [f"Folder `{data.root}`: {data.num_images} images, {len(data.classes)} classes.", ""]
    sizes = data.split.sizes
    if sizes:
        subsets = list(sizes)
        classes = list(data.classes or sorted({c for s in subsets for c in sizes[s]}))
        rows = [[c, *[sizes[s].get(c, 0) for s in subsets]] for c in classes]
        rows.append(["total", *[sum(sizes[s].values()) for s in subsets]])
        lines += _table(["class", *subsets], rows) + [""]
    if data.duplicates is not None:
        for text in (data.duplicates.summary, data.duplicates.policy):
            if text:
                lines += [md(text), ""]
    faces = face_survey_table(study)
    if faces:
        lines += [md(faces[0]), ""] + _table(faces[1], faces[2]) + [""]
    lines += ["Warnings:", ""] + ([f"- {md(w)}" for w in data.warnings] or ["- none"]) + [""]

    lines += ["## Machine and versions", ""]
    rows = [[k, v] for k, v in {**study.environment.machine, **study.environment.versions}.items()]
    if rows:
        lines += _table(["item", "value"], rows) + [""]
    lines += ["## Reproduce", "", "```", study.command, "```", ""]
    timings = study.timings
    if timings:
        lines.append("; ".join(f"{k.replace('_', ' ')}: {fmt_seconds(v)}" for k, v in timings.items() if v is not None))
        lines.append("")
    return "\n".join(lines)
