"""``image-classifier group DIR --out OUT``: unlabelled photos grouped into people, one folder each."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from image_classifier.optionspec import add_arguments, from_args
from image_classifier.people.options import GroupOptions


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "group",
        help="group the faces of unlabelled photos into people: one folder per person, a contact sheet",
        description=(
            "Find the faces in every photo under DIR (at any depth; cached by content), group them into "
            "people and write OUT: a folder per person (person_001, ...: links to the photos, each photo "
            "filed once, under its largest grouped face), no_face/, singles/ (faces in no group), "
            "groups.csv (every face: photo, box, group, distance to the group's centre) and index.html "
            "(a contact sheet per group). Rename a folder to name the person: a renamed folder is a class "
            "folder for compare, and running group again (after adding photos) keeps every group and its "
            "name, adding new faces to the groups they are close to and making new groups for the rest. "
            "Two faces of one photo are never grouped together. The originals are never touched."
        ),
    )
    p.add_argument("data", metavar="DIR", help="folder of photos (any layout)")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder (made, or updated when it exists)")
    p.add_argument("--model", metavar="MODEL_DIR",
                   help="name the unnamed groups that a trained face model knows (a face_embedding model "
                        "directory, or a compare run that has one); the others stay new people")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    add_arguments(p, GroupOptions)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    # Lazy (see image_classifier.cli): dlib, numpy; torch only with --model.
    from image_classifier.people import group_photos

    options = from_args(GroupOptions, args)
    if not sys.stderr.isatty():
        options = replace(options, progress=False)  # no bars in a log file
    options.check()  # before the model is loaded
    namer = None
    if args.model:
        from image_classifier.people.naming import ModelNamer

        namer = ModelNamer(args.model)
    result = group_photos(args.data, args.out, options, namer=namer)
    print(json.dumps(result.to_json(), indent=2, ensure_ascii=False) if args.json else result.render())
    return 0
