"""``image-classifier add MODEL_DIR PERSON_DIR --out NEW_MODEL_DIR``: a face model with one more
person, in seconds, without retraining (see :mod:`image_classifier.inference.enrol`)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from image_classifier import load_model  # light: inference loads on the call
from image_classifier.errors import ImageClassifierError
from image_classifier.inference.options import AddOptions
from image_classifier.optionspec import add_arguments, cache_root, from_args
from image_classifier.runs import resolve_model_dir


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "add",
        help="add a person to a face model in seconds, without retraining",
        description=(
            "Add the person in PERSON_DIR (photos of them, at least 3 with a face) to the face model in MODEL_DIR "
            "(a face_embedding model from `train` or `compare`) and save the result as a new model directory "
            "that loads, predicts, sorts and serves like any other. The face head, its bank of training faces "
            "and its \"none of these\" rule are refitted on the stored descriptors plus the new person's; a fifth "
            "of their photos (at least one) is kept aside to check the threshold on, and named in the output. "
            "The whole-image network, which answers photos without a face, knows only the original classes. "
            "A whole-image CNN cannot be extended this way: the command says what to run instead."
        ),
    )
    p.add_argument("model", metavar="MODEL_DIR", help="a face model directory (or a compare run whose best is one)")
    p.add_argument("person", metavar="PERSON_DIR", help="a folder of photos of the new person")
    add_arguments(p, AddOptions)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    # Lazy (see image_classifier.cli): the model loads torch and dlib.
    from image_classifier.faces import FaceCache
    from image_classifier.inference.rejection import describe_tradeoff
    from image_classifier.runtime import configure
    from image_classifier.units import fmt_seconds

    t0 = time.perf_counter()
    options = from_args(AddOptions, args)
    person = Path(args.person)
    if not person.is_dir():
        raise ImageClassifierError(f"{person} is not a folder: give a folder of photos of the person to add")
    name = options.name if options.name is not None else person.resolve().name
    configure()
    model_dir = resolve_model_dir(args.model)
    cache = FaceCache(cache_root(options.cache, options.cache_dir))
    model = load_model(model_dir, backend="torch", face_cache=cache, device="cpu")
    new = model.add_class(name, person, out=options.out, seed=options.seed, face_cache=cache)
    added = new.added
    before = ", ".join(model.classes)
    print(f"added {name!r} to {model_dir} ({before}): {len(added.train)} photo(s) learned from, "
          f"{len(added.validation)} kept aside to check the threshold on ({', '.join(_short(v) for v in added.validation)})")
    print(f"  validation: {added.validation_recognised} of {len(added.validation)} named {name!r}")
    for what, photos in (("without a face (left out)", added.without_face),
                         ("unreadable (left out)", [f"{_short(k)}: {v}" for k, v in added.unreadable.items()]),
                         ("the same photo as another (counted once)", added.duplicates)):
        if photos:
            print(f"  {len(photos)} {what}: " + "; ".join(photos[:5] if what.startswith("unreadable")
                                                           else [_short(p) for p in photos[:5]])
                  + (" ..." if len(photos) > 5 else ""))
    for who, n in added.looks_like.items():
        print(f"  warning: most of the faces learned ({n}) are very close to {who!r}'s: is {name!r} {who!r} again, "
              "or in their photos?", file=sys.stderr)
    print(f"  the face head, its bank ({added.bank[0]} -> {added.bank[1]} faces: the photos kept aside join it once "
          f"checked) and its \"none of these\" rule refitted in {fmt_seconds(added.seconds)}; calibration kept")
    trade = new.tradeoff()
    if trade is not None:
        print(f"  none of these: {describe_tradeoff(trade)}")
    print(f"  photos of {name!r} without a face: the whole-image network knows only {before}, so such a photo is "
          "answered as one of them, or unknown")
    print(f"saved to {options.out} ({len(new.classes)} classes) in {fmt_seconds(time.perf_counter() - t0)}")
    return 0


def _short(path: str) -> str:
    return Path(path).name if "/" in str(path) else str(path)
