"""Train/validation/test splits that are stratified, seeded, saved, and never split a duplicate group.

Why group-aware: the athletes data holds byte-identical copies and re-cropped copies of the same
photos. A split that puts one copy in training and the other in test measures memory, not
generalisation. Every exact or near-duplicate group (see :mod:`image_classifier.data.check`) is
assigned as one unit.

Algorithm (:func:`make_split`):

1. Per class, targets ``round_half_up(n * val)`` and ``round_half_up(n * test)`` images (at least
   one each when the fraction is positive and the class has 3+ images); train gets the rest.
2. Groups (singletons included) are put in a canonical order (by their first path), shuffled
   with ``random.Random(seed)``, then stably sorted largest first, so big groups are placed while
   every subset still has room. The result depends on the seed and the files, not on the order
   the filesystem lists them.
3. Each group goes to a subset that still has room for all its images in each of its classes,
   drawn with probability proportional to that room: for singletons this is exactly a uniformly
   random stratified split. A group that fits nowhere goes where it overshoots least.

The manifest is a CSV that pandas reads as is: ``rel_path, sha256, class, split, group, seed,
val_fraction, test_fraction``. The seed and fractions are repeated on every row rather than kept
in a comment line (which breaks CSV readers) or a sidecar file (which gets lost when the CSV is
copied next to a model).
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from image_classifier.data.check import AuditReport, audit_dataset
from image_classifier.data.options import DEFAULT_FRACTION, check_fractions
from image_classifier.data.scan import list_dataset, read_files
from image_classifier.errors import DatasetError, ManifestMismatchError
from image_classifier.fileio import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")
MANIFEST_COLUMNS = ("rel_path", "sha256", "class", "split", "group", "seed", "val_fraction",
                    "test_fraction")


@dataclass
class SplitRecord:
    rel_path: str  # POSIX, relative to the data root
    path: Path  # absolute location on this machine
    class_name: str
    label: int  # index of class_name in Split.classes
    sha256: str
    subset: str  # "train" | "val" | "test"
    group: int = -1  # index of the record's group (duplicates share one), -1 if unknown


@dataclass
class Split:
    """A split of one data folder. ``records`` are sorted by ``rel_path``."""

    classes: list[str]
    records: list[SplitRecord]
    data_root: Path
    seed: int | None = None
    val: float | None = None
    test: float | None = None
    source: Path | None = field(default=None, compare=False)  # the manifest it was loaded from

    def subset(self, name: str) -> list[SplitRecord]:
        if name not in SUBSETS:
            raise ValueError(f"unknown subset {name!r}; expected one of {', '.join(SUBSETS)}")
        return [r for r in self.records if r.subset == name]

    def sizes(self) -> dict[str, dict[str, int]]:
        """subset -> class -> number of images (every class listed, zeros included)."""
        out = {s: {c: 0 for c in self.classes} for s in SUBSETS}
        for r in self.records:
            out[r.subset][r.class_name] += 1
        return out

    def groups(self) -> dict[int, list[SplitRecord]]:
        """Duplicate groups (two or more images that must stay together), by group id."""
        by_group: dict[int, list[SplitRecord]] = {}
        for r in self.records:
            by_group.setdefault(r.group, []).append(r)
        return {g: rs for g, rs in by_group.items() if g >= 0 and len(rs) > 1}

    def group_summary(self) -> dict:
        """How duplicate groups were kept together: counts and where each one went."""
        groups = self.groups()
        return {
            "duplicate_groups": len(groups),
            "images_in_groups": sum(len(g) for g in groups.values()),
            "groups_crossing_subsets": sum(1 for g in groups.values() if len({r.subset for r in g}) > 1),
            "by_subset": dict(Counter(g[0].subset for g in groups.values())),
        }

    def manifest_text(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for r in self.records:
            writer.writerow([r.rel_path, r.sha256, r.class_name, r.subset, r.group,
                             "" if self.seed is None else self.seed,
                             "" if self.val is None else repr(self.val),
                             "" if self.test is None else repr(self.test)])
        return buf.getvalue()

    @property
    def manifest_sha256(self) -> str:
        """sha256 of the manifest's CSV text (equal to the file's sha256 when written by save())."""
        return hashlib.sha256(self.manifest_text().encode("utf-8")).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the CSV manifest atomically (a reader never sees half a file)."""
        path = Path(path)
        atomic_write_text(path, self.manifest_text())
        self.source = path


def _round_half_up(x: float) -> int:
    # 1e-9 absorbs float noise such as 159 * 0.15 = 23.849999999999998.
    return int(math.floor(x + 0.5 + 1e-9))


def class_targets(n: int, val: float, test: float) -> dict[str, int]:
    """How many images of a class of ``n`` go to each subset."""
    t_val = _round_half_up(n * val)
    t_test = _round_half_up(n * test)
    # Every evaluated subset should see every class when the class is big enough to afford it.
    if n >= 3:
        if test > 0 and t_test == 0:
            t_test = 1
        if val > 0 and t_val == 0:
            t_val = 1
    while t_val + t_test > n - 1 and (t_val or t_test):  # keep at least one training image
        if t_val >= t_test and t_val:
            t_val -= 1
        else:
            t_test -= 1
    return {"train": n - t_val - t_test, "val": t_val, "test": t_test}


def make_split(data_root: str | os.PathLike, *, seed: int = 0, val: float = DEFAULT_FRACTION,
               test: float = DEFAULT_FRACTION, audit: AuditReport | None = None) -> Split:
    """Audit ``data_root`` (unless ``audit`` is given) and split it; see the module docstring.

    Raises :class:`DatasetError` when the data is not usable or the fractions make no sense.
    """
    check_fractions(val, test)
    if audit is None:
        audit = audit_dataset(data_root)
    if not audit.usable:
        raise DatasetError("the data cannot be split: " + "; ".join(audit.errors))
    classes = list(audit.classes)
    label = {c: i for i, c in enumerate(classes)}
    records = sorted(audit.records, key=lambda r: r.rel_path)

    # Groups: duplicate groups from the audit, every other image alone. Canonical order first.
    in_group = audit.group_of()
    grouped: dict[int, list] = {}
    units: list[list] = []
    for r in records:
        g = in_group.get(r.rel_path)
        if g is None:
            units.append([r])
        else:
            grouped.setdefault(g, []).append(r)
    units.extend(grouped.values())
    units.sort(key=lambda u: u[0].rel_path)
    group_id = {r.rel_path: k for k, u in enumerate(units) for r in u}

    rng = random.Random(seed)
    order = list(units)
    rng.shuffle(order)
    order.sort(key=len, reverse=True)  # stable: equal sizes keep their shuffled order

    targets = {c: class_targets(n, val, test) for c, n in audit.classes.items()}
    room = {s: {c: targets[c][s] for c in classes} for s in SUBSETS}
    assignment: dict[str, str] = {}
    for unit in order:
        need = Counter(r.class_name for r in unit)
        fits = [s for s in SUBSETS if all(room[s][c] >= k for c, k in need.items())]
        if fits:
            weights = [sum(room[s][c] * k for c, k in need.items()) for s in fits]
            chosen = rng.choices(fits, weights=weights)[0] if sum(weights) > 0 else fits[0]
        else:
            chosen = max(SUBSETS, key=lambda s: min(room[s][c] - k for c, k in need.items()))
            log.debug("group of %d (%s) fits nowhere; placed in %s", len(unit), unit[0].rel_path, chosen)
        for c, k in need.items():
            room[chosen][c] -= k
        for r in unit:
            assignment[r.rel_path] = chosen

    split_records = [SplitRecord(r.rel_path, Path(r.path), r.class_name, label[r.class_name], r.sha256,
                                 assignment[r.rel_path], group_id[r.rel_path]) for r in records]
    split = Split(classes, split_records, Path(audit.root), seed=seed, val=val, test=test)
    sizes = split.sizes()
    log.debug("split (seed %d): %s", seed,
             ", ".join(f"{s} {sum(sizes[s].values())}" for s in SUBSETS))
    return split


def _read_manifest(csv_path: Path) -> list[dict[str, str]]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestMismatchError(f"split manifest {csv_path} does not exist; create it with "
                                    f"`image-classifier split DATA --out {csv_path}`") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestMismatchError(f"cannot read split manifest {csv_path}: {err}") from None
    reader = csv.DictReader(io.StringIO(text))
    required = {"rel_path", "sha256", "class", "split"}
    missing = required - set(reader.fieldnames or [])
    if missing:
        raise ManifestMismatchError(
            f"{csv_path} is not a split manifest (missing columns: {', '.join(sorted(missing))}); "
            "create one with `image-classifier split`")
    rows = list(reader)
    bad = [r.get("rel_path", "?") for r in rows if r.get("split") not in SUBSETS]
    if bad:
        raise ManifestMismatchError(f"{csv_path}: rows with a split other than train/val/test, "
                                    f"e.g. {bad[0]}")
    if not rows:
        raise ManifestMismatchError(f"{csv_path} lists no images")
    return rows


def _examples(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def load_split(csv_path: str | os.PathLike, data_root: str | os.PathLike) -> Split:
    """Load a manifest and verify it against the files now in ``data_root``.

    Every listed file must exist with the same sha256 and class, and no readable image may have
    been added. Raises :class:`ManifestMismatchError` naming (a few of) the offending files.
    """
    csv_path = Path(csv_path)
    rows = _read_manifest(csv_path)
    listing = list_dataset(data_root)
    on_disk = {f.rel_path: f for f in listing.files}
    listed = {r["rel_path"]: r for r in rows}
    if len(listed) != len(rows):
        dup = [p for p, n in Counter(r["rel_path"] for r in rows).items() if n > 1]
        raise ManifestMismatchError(f"{csv_path} lists some files twice, e.g. {_examples(dup)}")

    missing = sorted(p for p in listed if p not in on_disk)
    present = sorted(p for p in listed if p in on_disk)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = dict(zip(present, pool.map(lambda p: sha256_file(on_disk[p].path), present)))
    changed = sorted(p for p in present if hashes[p] != listed[p]["sha256"])
    moved = sorted(p for p in present if on_disk[p].class_name != listed[p]["class"])
    extra = [f for f in listing.files if f.rel_path not in listed]
    new: list[str] = []
    if extra:
        # Files the manifest does not know: only readable images matter (unreadable files are
        # skipped by every command, so they were rightly left out).
        readable, _ = read_files(extra, listing.classes)
        new = sorted(r.rel_path for r in readable)

    problems = [f"{len(paths)} {what} ({_examples(paths)})" for what, paths in (
        ("changed", changed), ("missing", missing), ("new", new), ("in another class than recorded", moved)) if paths]
    if problems:
        raise ManifestMismatchError(
            f"split manifest {csv_path} no longer matches the images in {listing.root}: "
            + "; ".join(problems)
            + f". Re-run `image-classifier split {listing.root} --out {csv_path}` to make a new "
            "split (models trained on the old one are not comparable with new ones), or drop "
            "--split to split afresh.")

    classes = sorted({r["class"] for r in rows})
    label = {c: i for i, c in enumerate(classes)}

    def _number(row: dict, key: str, kind):
        try:
            return kind(row[key]) if row.get(key) not in (None, "") else None
        except ValueError:
            return None

    first = rows[0]
    records = sorted(
        (SplitRecord(p, on_disk[p].path, r["class"], label[r["class"]], r["sha256"], r["split"],
                     _number(r, "group", int) if _number(r, "group", int) is not None else -1)
         for p, r in listed.items()),
        key=lambda rec: rec.rel_path)
    split = Split(classes, records, listing.root, seed=_number(first, "seed", int),
                  val=_number(first, "val_fraction", float), test=_number(first, "test_fraction", float),
                  source=csv_path)
    return split


def resolve_split(data_root: str | os.PathLike, split_csv: str | os.PathLike | None, *, seed: int = 0,
                  val: float = DEFAULT_FRACTION, test: float = DEFAULT_FRACTION, audit=None) -> Split:
    """The split every command uses: the verified manifest when ``split_csv`` is given, else a new one."""
    if split_csv is not None:
        split = load_split(split_csv, data_root)
        if (split.seed, split.val, split.test) != (seed, val, test) and split.seed is not None:
            log.info("using the split in %s (seed %s, val %s, test %s); --seed/--val/--test apply "
                     "only to new splits", split_csv, split.seed, split.val, split.test)
        return split
    return make_split(data_root, seed=seed, val=val, test=test, audit=audit)
