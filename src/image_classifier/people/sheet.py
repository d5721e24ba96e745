"""``OUT/index.html``: a contact sheet per group, for a person to see what to name, merge or split.

One self-contained page (inline CSS, no script, nothing from the network) whose pictures are the
face thumbnails under ``OUT/.thumbs`` (relative links, so the folder can be moved or zipped). Each
group shows its faces largest first (the clearest first), each face links to its photo in the
output folder, and the nearest other group with the distance between their centres: two groups
of one person are usually each other's nearest, and closer than two people.
"""
from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from image_classifier.people.layout import link_name, thumb_name
from image_classifier.people.photos import FaceRef
from image_classifier.people.state import NO_FACE_DIR, SINGLES_DIR, THUMBS_DIR

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2125;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:16px}
h1{font-size:1.5em;margin:.3em 0}
h2{font-size:1.2em;margin:1.4em 0 .3em}
.muted{color:#57606a;font-size:.92em}
.help{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:8px 14px}
code{background:#eef1f4;padding:1px 4px;border-radius:4px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:8px 14px;margin:14px 0}
.faces{display:flex;flex-wrap:wrap;gap:4px}
.faces a{display:block;line-height:0}
.faces img{width:96px;height:96px;border-radius:4px;object-fit:cover}
ul.files{columns:3;font-size:.9em}
"""


@dataclass(frozen=True)
class SheetGroup:
    """One group as the sheet shows it."""

    name: str
    faces: Sequence[FaceRef]  # largest first
    photos: int  # photos filed under it
    note: str = ""  # what happened to it in this run (new, grown, named by the model, ...)
    nearest: tuple[str, float] | None = None  # the nearest other group and the distance between centres


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _href(*parts: str) -> str:
    return "/".join(quote(p) for p in parts)


def _faces(faces: Sequence[FaceRef], folder_of: dict[str, str], distance: dict[str, float],
           missing: set[str]) -> str:
    items = []
    for f in faces:
        if f.key in missing:  # the photo could not be decoded again for its thumbnail
            continue
        d = distance.get(f.key)
        title = f.photo.rel_path + (f" (face {f.index + 1}, {d:.2f} from the group's centre)" if d is not None
                                    else f" (face {f.index + 1})")
        folder = folder_of.get(f.photo.rel_path)
        img = (f'<img src="{esc(_href(THUMBS_DIR, thumb_name(f)))}" alt="{esc(f.photo.rel_path)}" '
               f'title="{esc(title)}">')
        items.append(f'<a href="{esc(_href(folder, link_name(f.photo)))}">{img}</a>' if folder else img)
    return '<div class="faces">' + "".join(items) + "</div>"


def render_sheet(data: Path, groups: Sequence[SheetGroup], singles: Sequence[FaceRef],
                 no_face: Sequence[str], unreadable: dict[str, str], folder_of: dict[str, str],
                 distance: dict[str, float], summary: str, missing: set[str] | None = None) -> str:
    """The page. ``folder_of``: photo -> the output folder it is filed in (faces link to it);
    ``distance``: face key -> its distance to its group's centre; ``missing``: faces without a
    thumbnail (left out, so the page never shows a broken picture)."""
    missing = missing or set()
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>People in {esc(data.name)}</title><style>{CSS}</style></head><body><main>",
           f"<h1>People in {esc(os.fspath(data))}</h1>", f'<p class="muted">{esc(summary)}</p>',
           '<div class="help"><p>Each box below is one person, faces largest first. To name a person, rename '
           "the folder (<code>person_001</code> &rarr; <code>Ana</code>); the next run keeps the name. Two "
           "boxes of one person: <code>--merge A B</code>. Two people in one box: <code>--split A</code>. "
           "A renamed folder is a class folder for <code>image-classifier compare</code>.</p></div>"]
    for g in groups:
        nearest = (f"; nearest group: {esc(g.nearest[0])} (centres {g.nearest[1]:.2f} apart)"
                   if g.nearest is not None else "")
        note = f"; {esc(g.note)}" if g.note else ""
        out.append(f'<section id="{esc(g.name)}"><h2>{esc(g.name)}</h2>'
                   f'<p class="muted">{len(g.faces)} faces, {g.photos} photos filed here{note}{nearest}</p>'
                   + _faces(g.faces, folder_of, distance, missing) + "</section>")
    if singles:
        out.append(f'<section id="{SINGLES_DIR}"><h2>{SINGLES_DIR}</h2><p class="muted">{len(singles)} faces '
                   "like no group's (a person in fewer photos than the minimum group size, or a poor face)"
                   "</p>" + _faces(singles, folder_of, distance, missing) + "</section>")
    if no_face:
        out.append(f'<section id="{NO_FACE_DIR}"><h2>{NO_FACE_DIR}</h2><p class="muted">{len(no_face)} photos '
                   'in which no face was found</p><ul class="files">'
                   + "".join(f'<li><a href="{esc(_href(NO_FACE_DIR, name))}">{esc(name)}</a></li>' for name in no_face)
                   + "</ul></section>")
    if unreadable:
        out.append('<section id="unreadable"><h2>unreadable</h2><ul class="files">'
                   + "".join(f"<li>{esc(p)}: {esc(r)}</li>" for p, r in sorted(unreadable.items()))
                   + "</ul></section>")
    out.append("</main></body></html>")
    return "\n".join(out)
