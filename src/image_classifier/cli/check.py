"""``image-classifier check DATA``: audit a class-folder dataset before training on it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from image_classifier.data.options import CheckOptions
from image_classifier.optionspec import add_arguments, from_args

if TYPE_CHECKING:
    from image_classifier.faces import FaceSurvey
    from image_classifier.faces.suspects import SuspectReport


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check",
        help="audit a dataset: counts, formats, unreadable files, duplicates, label conflicts",
        description=(
            "Read every file under DATA/<class>/ and report per-class counts and imbalance, image "
            "formats and sizes, files whose extension lies about their format, unreadable files "
            "(with the reason), exact duplicates (same bytes), near-duplicates (same photo "
            "re-encoded or re-cropped, with the evidence) and duplicates that sit in two classes. "
            "For photos of people it also counts the faces per class and lists suspect labels: photos "
            "whose faces, grouped into people with the folder names hidden, are another class's person "
            "or someone else who recurs, and far from their own class's person. "
            "Exit status 0 when the data can be used for training, 1 when it cannot."
        ),
    )
    p.add_argument("data", metavar="DATA", help="folder with one sub-folder of images per class")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    add_arguments(p, CheckOptions)
    p.set_defaults(func=run)
    return p


def _survey(records: list, progress: bool) -> FaceSurvey | None:
    # Lazy (see image_classifier.cli): dlib.
    from image_classifier.faces import FaceCache, FaceModelsNotFoundError, survey_faces
    from image_classifier.fileio import default_cache_dir

    try:
        return survey_faces(records, FaceCache(default_cache_dir()), progress=progress)
    except FaceModelsNotFoundError as err:
        print(f"warning: faces not counted: {err}", file=sys.stderr)
        return None


def _suspects(records: list, survey: FaceSurvey) -> SuspectReport:
    from image_classifier.faces.suspects import find_suspect_labels  # lazy: dlib (see image_classifier.cli)

    return find_suspect_labels(records, survey.analyses)


def _write_html(path: Path, data: str, report, survey: FaceSurvey | None, suspects: SuspectReport | None) -> None:
    # Lazy (see image_classifier.cli): Pillow, and matplotlib through the report package.
    from image_classifier.faces.suspects import suspect_thumbnails
    from image_classifier.faces.thumbnails import data_uri
    from image_classifier.fileio import atomic_write_text
    from image_classifier.i18n import DEFAULT, translator
    from image_classifier.report.suspects import suspects_page

    entries = suspects.to_json() if suspects is not None else []
    thumbs = suspect_thumbnails(suspects.suspects, {r.rel_path: r.path for r in report.records}) if suspects else {}
    preface = report.render() + ("\n" + survey.render() if survey is not None else "")
    page = suspects_page(f"image-classifier check {data}", entries,
                         lambda e: data_uri(thumbs[e["path"]]) if e["path"] in thumbs else None,
                         translator(DEFAULT), preface)
    atomic_write_text(path, page)
    print(f"wrote {path}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from image_classifier.data.check import audit_dataset  # lazy: Pillow and numpy (see image_classifier.cli)

    options = from_args(CheckOptions, args)
    progress = not args.json or sys.stderr.isatty()
    report = audit_dataset(args.data, near_duplicates=options.near_duplicates, progress=progress)
    survey = None if not options.faces or not report.records else _survey(report.records, progress)
    suspects = _suspects(report.records, survey) if survey is not None else None
    if args.json:
        out = report.to_json()
        out["faces"] = survey.to_json() if survey is not None else None
        out["suspect_labels"] = suspects.to_json() if suspects is not None else None
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(report.render())
        if survey is not None:
            print(survey.render())
        if suspects is not None:
            print(suspects.render())
    if options.html is not None:
        _write_html(options.html, args.data, report, survey, suspects)
    if not report.usable:
        print(f"image-classifier check: the data in {args.data} cannot be used: "
              + "; ".join(report.errors), file=sys.stderr)
        return 1
    return 0
