"""``image-classifier group DIR --out OUT``: unlabelled photos grouped into people, one folder each."""
from __future__ import annotations

import argparse
import json
import sys

#: The defaults, as :mod:`image_classifier.faces.clustering` defines them (not imported here: it
#: loads dlib, and ``--help`` must stay instant; tests/test_group.py checks that they agree).
MIN_SIZE = 3
CORE_DISTANCE = 0.5
ATTACH_DISTANCE = 0.6


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
    p.add_argument("--min-size", type=int, default=MIN_SIZE, metavar="N",
                   help="a new group needs at least N faces; faces of smaller ones go to singles/ "
                        "(default: %(default)s)")
    p.add_argument("--merge", nargs=2, metavar=("A", "B"),
                   help="merge group B into group A (folder names); A keeps its name")
    p.add_argument("--split", metavar="GROUP",
                   help="re-cluster one group tighter (a lower core distance, step by step) into two or more")
    p.add_argument("--model", metavar="MODEL_DIR",
                   help="name the unnamed groups that a trained face model knows (a face_embedding model "
                        "directory, or a compare run that has one); the others stay new people")
    p.add_argument("--copy", action="store_true", help="copy the photos instead of linking to them")
    p.add_argument("--core-distance", type=float, default=CORE_DISTANCE, metavar="D",
                   help="faces closer than D form a group's core (default: %(default)s, measured: see "
                        "docs/benchmarks.md)")
    p.add_argument("--attach-distance", type=float, default=ATTACH_DISTANCE, metavar="D",
                   help="a face outside every core joins the nearest group whose centre is closer than D "
                        "(default: %(default)s, dlib's same-person distance)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the face cache (every photo is analysed again)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    # Lazy (see image_classifier.cli): dlib, numpy; torch only with --model.
    from image_classifier.fileio import default_cache_dir
    from image_classifier.people import GroupOptions, group_photos

    options = GroupOptions(min_size=args.min_size, core_distance=args.core_distance,
                           attach_distance=args.attach_distance, copy=args.copy,
                           merge=tuple(args.merge) if args.merge else None, split=args.split,
                           cache_dir=None if args.no_cache else default_cache_dir(),
                           progress=not args.no_progress and sys.stderr.isatty())
    options.check()  # before the model is loaded
    namer = None
    if args.model:
        from image_classifier.people.naming import ModelNamer

        namer = ModelNamer(args.model)
    result = group_photos(args.data, args.out, options, namer=namer)
    print(json.dumps(result.to_json(), indent=2, ensure_ascii=False) if args.json else result.render())
    return 0
