"""Suspect labels for people to look at: a face thumbnail per photo, its folder and who it shows.

The same HTML for ``compare``'s report (thumbnails written under the run's ``plots/``) and for
``check --html`` (thumbnails made from the photos as data URIs); one self-contained page either way.
Entries are :meth:`~image_classifier.faces.suspects.SuspectLabel.to_json` dicts.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from image_classifier.i18n import Translator

CSS = """
.suspects{display:flex;flex-wrap:wrap;gap:10px}
.suspects figure{margin:0;width:150px;font-size:.82em;line-height:1.3}
.suspects img{width:150px;height:150px;object-fit:cover;border-radius:4px;border:1px solid #d0d7de}
.suspects figcaption{word-break:break-word}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def caption(entry: Mapping[str, Any], t: Translator) -> str:
    """What a suspect photo is said to show, in the report's language."""
    if entry.get("kind") == "another_class":
        return t("report.suspects.another_class", label=entry["label"], shows=entry.get("shows"))
    return t("report.suspects.another_person", label=entry["label"], photos=entry.get("group_photos", 0))


def summary(entries: Sequence[Mapping[str, Any]], t: Translator) -> str:
    return t("report.suspects.summary", count=len(entries)) if entries else t("report.suspects.none")


def suspects_html(entries: Sequence[Mapping[str, Any]], src: Callable[[Mapping[str, Any]], str | None],
                  t: Translator) -> str:
    """A summary sentence and a figure per suspect photo; ``src`` gives each entry's image URI
    (None: no picture, the caption alone)."""
    figures = []
    for e in entries:
        uri = src(e)
        img = f'<img alt="{esc(e["path"])}" src="{esc(uri)}">' if uri else ""
        figures.append(f'<figure>{img}<figcaption><b>{esc(e["path"])}</b><br>{esc(caption(e, t))}</figcaption></figure>')
    body = f'<div class="suspects">{"".join(figures)}</div>' if figures else ""
    return f"<p>{esc(summary(entries, t))}</p>{body}"


def suspects_page(title: str, entries: Sequence[Mapping[str, Any]], src: Callable[[Mapping[str, Any]], str | None],
                  t: Translator, preface: str = "") -> str:
    """A whole self-contained page (``check --html``): ``preface`` (plain text, e.g. the check's
    report) in a ``<pre>``, then the suspect labels."""
    pre = f"<pre>{esc(preface)}</pre>" if preface else ""
    return ("<!doctype html>" f'<html lang="{esc(t.lang)}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>body{{font:15px/1.45 system-ui,sans-serif;margin:16px;color:#1d2125}}"
            f"pre{{background:#f6f7f9;padding:8px;white-space:pre-wrap}}{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1>{pre}<h2>{esc(t('report.heading.suspects'))}</h2>"
            + suspects_html(entries, src, t) + "</body></html>")
