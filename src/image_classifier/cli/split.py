"""``image-classifier split DATA --out split.csv``: a saved, stratified, duplicate-safe split."""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from image_classifier.data.options import SplitOptions
from image_classifier.errors import DatasetError
from image_classifier.optionspec import add_arguments, from_args

if TYPE_CHECKING:
    from image_classifier.data.split import Split


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "split",
        help="split a dataset into train/val/test and save the manifest (CSV)",
        description=(
            "Make a stratified train/validation/test split in which every exact or near-duplicate "
            "group lands on one side, reproducible for a given seed and data, and save it as a CSV "
            "manifest (rel_path, sha256, class, split, group, seed, fractions). Pass it to later "
            "commands with --split; they refuse it if the images changed since."
        ),
    )
    p.add_argument("data", metavar="DATA", help="folder with one sub-folder of images per class")
    p.add_argument("--out", required=True, type=Path, metavar="CSV", help="where to write the manifest")
    add_arguments(p, SplitOptions)
    p.set_defaults(func=run)
    return p


def format_sizes(split: Split) -> str:
    """A table: one row per class, one column per subset, with totals."""
    from image_classifier.data.split import SUBSETS

    sizes = split.sizes()
    width = max([len("class"), len("total")] + [len(c) for c in split.classes])
    lines = [f"  {'class':<{width}}" + "".join(f"  {s:>6}" for s in SUBSETS) + f"  {'total':>6}"]
    for c in split.classes:
        row = [sizes[s][c] for s in SUBSETS]
        lines.append(f"  {c:<{width}}" + "".join(f"  {n:>6}" for n in row) + f"  {sum(row):>6}")
    totals = [sum(sizes[s].values()) for s in SUBSETS]
    lines.append(f"  {'total':<{width}}" + "".join(f"  {n:>6}" for n in totals) + f"  {sum(totals):>6}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # Lazy (see image_classifier.cli): the data layer brings in Pillow and numpy.
    from image_classifier.data.check import audit_dataset
    from image_classifier.data.split import make_split

    options = from_args(SplitOptions, args)  # checked when made: before the scan, not after it
    audit = audit_dataset(args.data, progress=True)
    if not audit.usable:
        raise DatasetError("the data cannot be split: " + "; ".join(audit.errors)
                           + f" (run `image-classifier check {args.data}` for the full report)")
    split = make_split(args.data, **asdict(options), audit=audit)
    split.save(args.out)
    g = split.group_summary()
    print(f"Split of {audit.root} (seed {options.seed}, val {options.val}, test {options.test}) "
          f"saved to {args.out}")
    print(format_sizes(split))
    print(f"{g['duplicate_groups']} duplicate groups ({g['images_in_groups']} images) each kept in "
          f"one subset: {', '.join(f'{k} {v}' for k, v in sorted(g['by_subset'].items()))}")
    if audit.unreadable:
        print(f"{len(audit.unreadable)} unreadable file(s) left out (see `image-classifier check`)")
    print(f"manifest sha256 {split.manifest_sha256}")
    return 0
