"""Auditing a dataset before training: counts, formats, broken files, duplicates, label conflicts.

:func:`audit_dataset` returns an :class:`AuditReport` that the ``check`` command prints (as a
table or JSON) and that :func:`image_classifier.data.split.make_split` uses to keep every
duplicate group on one side of the split.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from image_classifier.data.near_duplicates import (BranchCounts, NearDuplicateParams,
                                                   search_near_duplicates)
from image_classifier.data.scan import ImageRecord, ScanResult, UnreadableFile, scan_dataset

log = logging.getLogger(__name__)

MIN_IMAGES_PER_CLASS = 2  # below this a class cannot be learned and evaluated at all
FEW_IMAGES_PER_CLASS = 10  # below this results will be noise: warn
IMBALANCE_WARNING = 3.0  # largest class / smallest class
SMALL_SIDE_WARNING = 64  # px: images this small carry little for a 224 px model


@dataclass(frozen=True)
class NearDuplicateFinding:
    """A near-duplicate pair, by relative path, with the evidence."""

    a: str
    b: str
    method: str
    ncc: float | None
    phash_distance: int
    scale: float | None
    lowpass_rms: float | None = None  # textureless pair, confirmed on its blurred images

    def strength(self) -> tuple[int, float]:
        """Sort key, weakest first: a low-pass agreement (textureless pair) is weaker evidence than
        any band-pass NCC, and among those a larger RMS difference is weaker."""
        if self.ncc is None:
            return (0, -(self.lowpass_rms or 0.0))
        return (1, self.ncc)

    def score(self) -> str:
        return (f"ncc {self.ncc:.3f}" if self.ncc is not None
                else f"textureless, low-pass rms {self.lowpass_rms:.1f}")

    def evidence(self) -> str:
        scale = f", scale {self.scale:.2f}" if self.scale is not None else ""
        return f"{self.method}: {self.score()}{scale}, phash distance {self.phash_distance}"

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "method": self.method, "ncc": self.ncc,
                "phash_distance": self.phash_distance, "scale": self.scale,
                "lowpass_rms": self.lowpass_rms}


@dataclass
class AuditReport:
    """Everything ``check`` reports, plus the records and duplicate groups the split needs."""

    root: Path
    classes: dict[str, int]  # class name -> readable images, in label order
    records: list[ImageRecord] = field(repr=False)
    unreadable: list[UnreadableFile]
    stray_files: list[str]
    exact_duplicate_groups: list[list[str]]
    near_duplicate_groups: list[list[str]]
    near_duplicate_pairs: list[NearDuplicateFinding]
    groups: list[list[str]]  # connected components of exact + near duplicates (size >= 2)
    label_conflicts: list[dict]
    near_duplicate_params: NearDuplicateParams | None
    errors: list[str]
    warnings: list[str]
    seconds: float = 0.0
    # Candidate pairs each branch ("phash", "local-features") proposed, accepted and rejected.
    near_duplicate_candidates: dict[str, BranchCounts] = field(default_factory=dict)
    # The least certain pair of each near-duplicate group, in the order of near_duplicate_groups:
    # a group is only as sure as its weakest link.
    near_duplicate_weakest_links: list[NearDuplicateFinding] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.errors

    @property
    def images(self) -> int:
        return len(self.records)

    @property
    def files(self) -> int:
        return len(self.records) + len(self.unreadable)

    @property
    def imbalance_ratio(self) -> float | None:
        counts = [n for n in self.classes.values() if n > 0]
        return round(max(counts) / min(counts), 3) if counts else None

    def group_of(self) -> dict[str, int]:
        """rel_path -> index into :attr:`groups`, for images that have duplicates."""
        return {p: g for g, paths in enumerate(self.groups) for p in paths}

    def formats(self) -> dict[str, int]:
        return dict(sorted(Counter(r.format for r in self.records).items()))

    def extension_mismatches(self) -> list[dict]:
        return [{"path": r.rel_path, "extension_claims": r.extension_claims, "format": r.format}
                for r in self.records if r.extension_claims]

    def size_stats(self) -> dict:
        if not self.records:
            return {}
        sides = {"width": [r.width for r in self.records], "height": [r.height for r in self.records],
                 "shorter_side": [min(r.width, r.height) for r in self.records]}
        common = Counter(f"{r.width}x{r.height}" for r in self.records).most_common(3)
        return {
            **{k: {"min": min(v), "median": statistics.median(v), "max": max(v)} for k, v in sides.items()},
            "most_common": [{"size": s, "count": n} for s, n in common],
            "bytes_total": sum(r.size_bytes for r in self.records),
        }

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "usable": self.usable,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "files": self.files,
            "images": self.images,
            "classes": dict(self.classes),
            "imbalance_ratio": self.imbalance_ratio,
            "formats": self.formats(),
            "sizes": self.size_stats(),
            "extension_mismatches": self.extension_mismatches(),
            "unreadable": [{"path": u.rel_path, "reason": u.reason} for u in self.unreadable],
            "stray_files": list(self.stray_files),
            "exact_duplicate_groups": [list(g) for g in self.exact_duplicate_groups],
            "near_duplicate_groups": [list(g) for g in self.near_duplicate_groups],
            "near_duplicate_pairs": [p.to_json() for p in self.near_duplicate_pairs],
            "near_duplicate_weakest_links": [p.to_json() for p in self.near_duplicate_weakest_links],
            "near_duplicate_candidates": {k: c.to_json()
                                          for k, c in self.near_duplicate_candidates.items()},
            "near_duplicate_method": (self.near_duplicate_params.to_json()
                                      if self.near_duplicate_params else None),
            "duplicate_groups": [list(g) for g in self.groups],
            "label_conflicts": [dict(c) for c in self.label_conflicts],
            "seconds": round(self.seconds, 2),
        }

    def render(self) -> str:
        """The human-readable report printed by ``image-classifier check``."""
        lines: list[str] = [f"Dataset {self.root}"]
        lines.append(f"{self.files} files, {self.images} readable images, {len(self.classes)} classes")
        lines.append("")
        width = max([len("class")] + [len(c) for c in self.classes])
        lines.append(f"  {'class':<{width}}  {'images':>6}  {'share':>6}")
        total = max(1, self.images)
        for name, n in self.classes.items():
            lines.append(f"  {name:<{width}}  {n:>6}  {100 * n / total:>5.1f}%")
        if self.imbalance_ratio is not None:
            lines.append(f"  imbalance (largest / smallest class): {self.imbalance_ratio:.2f}")
        lines.append("")
        if self.records:
            fmts = ", ".join(f"{k} {v}" for k, v in self.formats().items())
            st = self.size_stats()
            sides = st["shorter_side"]
            common = ", ".join(f"{c['size']} ({c['count']})" for c in st["most_common"])
            lines.append(f"Formats: {fmts}")
            lines.append(f"Sizes: shorter side min {sides['min']} / median {sides['median']:g} / "
                         f"max {sides['max']} px; most common {common}")
        mism = self.extension_mismatches()
        lines.append(f"Extension does not match content: {len(mism)}")
        lines += [f"  {m['path']}: named {m['extension_claims']}, is {m['format']}" for m in mism]
        lines.append(f"Unreadable files (skipped): {len(self.unreadable)}")
        lines += [f"  {u.rel_path}: {u.reason}" for u in self.unreadable]
        if self.stray_files:
            lines.append(f"Files outside any class folder (ignored): {len(self.stray_files)}")
            lines += [f"  {s}" for s in self.stray_files]
        lines.append("")
        lines.append(f"Exact duplicates (same bytes): {len(self.exact_duplicate_groups)} groups, "
                     f"{sum(len(g) for g in self.exact_duplicate_groups)} files")
        lines += ["  " + " = ".join(g) for g in self.exact_duplicate_groups]
        method = self.near_duplicate_params.describe() if self.near_duplicate_params else "not searched"
        lines.append(f"Near duplicates: {len(self.near_duplicate_pairs)} pairs in "
                     f"{len(self.near_duplicate_groups)} groups ({method})")
        if self.near_duplicate_candidates:
            lines.append("  candidate pairs: " + "; ".join(
                f"{k} {c.considered} considered, {c.accepted} accepted, {c.rejected} rejected"
                for k, c in self.near_duplicate_candidates.items()))
        lines += [f"  {p.a} ~ {p.b}  ({p.evidence()})" for p in self.near_duplicate_pairs]
        if self.near_duplicate_weakest_links:
            lines.append("Weakest link of each near-duplicate group:")
        lines += [f"  {len(g)} files: {p.a} ~ {p.b}  ({p.score()})"
                  for g, p in zip(self.near_duplicate_groups, self.near_duplicate_weakest_links)]
        lines.append(f"Label conflicts (duplicates in different classes): {len(self.label_conflicts)}")
        lines += [f"  {', '.join(c['classes'])}: {' ; '.join(c['paths'])}" for c in self.label_conflicts]
        lines.append("")
        lines += [f"warning: {w}" for w in self.warnings] + [f"error: {e}" for e in self.errors]
        lines.append("Verdict: " + ("usable" if self.usable else "NOT usable (fix the errors above)"))
        return "\n".join(lines)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def _components(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    uf = _UnionFind(n)
    for i, j in edges:
        uf.union(i, j)
    comps: dict[int, list[int]] = {}
    for i in range(n):
        comps.setdefault(uf.find(i), []).append(i)
    return [c for c in comps.values() if len(c) > 1]


def audit_dataset(root: str | os.PathLike, *, near_duplicates: bool = True,
                  params: NearDuplicateParams | None = None, progress: bool = False,
                  scan: ScanResult | None = None) -> AuditReport:
    """Scan ``root`` and judge whether it can be used for training; see :class:`AuditReport`.

    ``near_duplicates=False`` skips the near-duplicate search (exact duplicates are always found).
    """
    started = time.perf_counter()
    params = params or NearDuplicateParams()
    if scan is None:
        scan = scan_dataset(root, fingerprints=near_duplicates, progress=progress)
    records = scan.records  # sorted by rel_path
    n = len(records)

    # Exact duplicates: same sha256.
    by_hash: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_hash.setdefault(r.sha256, []).append(i)
    exact_groups = [idx for idx in by_hash.values() if len(idx) > 1]
    edges = [(idx[0], k) for idx in exact_groups for k in idx[1:]]

    # Near duplicates among distinct contents (the first file of each content stands for it).
    findings: list[NearDuplicateFinding] = []
    near_edges: list[tuple[int, int]] = []
    candidates: dict[str, BranchCounts] = {}
    if near_duplicates and n > 1:
        reps = [idx[0] for idx in by_hash.values()]
        reps.sort()
        missing = [i for i in reps if records[i].fingerprint is None]
        if missing:
            raise ValueError("audit_dataset(near_duplicates=True) needs a scan made with fingerprints=True")
        t0 = time.perf_counter()
        if progress:
            log.info("searching %d distinct images for near-duplicates...", len(reps))
        search = search_near_duplicates([records[i].fingerprint for i in reps], params)
        log.debug("near-duplicate search: %.2f s", time.perf_counter() - t0)
        candidates = search.candidates
        for p in search.pairs:
            i, j = reps[p.a], reps[p.b]
            near_edges.append((i, j))
            findings.append(NearDuplicateFinding(records[i].rel_path, records[j].rel_path, p.method,
                                                 p.ncc, p.phash_distance, p.scale, p.lowpass_rms))
    near_components = _components(n, edges + near_edges)
    near_nodes = {i for e in near_edges for i in e}
    paths = lambda idx: sorted(records[i].rel_path for i in idx)  # noqa: E731
    all_groups = sorted((paths(c) for c in near_components), key=lambda g: g[0])
    near_groups = sorted((paths(c) for c in near_components if near_nodes & set(c)), key=lambda g: g[0])
    exact = sorted((paths(g) for g in exact_groups), key=lambda g: g[0])
    # Groups are components of confirmed pairs only; each one's weakest pair says how sure it is.
    group_index = {p: k for k, g in enumerate(near_groups) for p in g}
    in_group: dict[int, list[NearDuplicateFinding]] = {}
    for f in findings:
        in_group.setdefault(group_index[f.a], []).append(f)
    weakest_links = [min(in_group[k], key=NearDuplicateFinding.strength) for k in range(len(near_groups))]
    by_path = {r.rel_path: r for r in records}
    conflicts = []
    for g in all_groups:
        classes = sorted({by_path[p].class_name for p in g})
        if len(classes) > 1:
            conflicts.append({"classes": classes, "paths": g})

    counts = scan.class_counts()
    errors, warnings = _verdict(scan, counts, exact, near_groups, conflicts)
    report = AuditReport(
        root=scan.root, classes=counts, records=records, unreadable=scan.unreadable,
        stray_files=scan.stray_files, exact_duplicate_groups=exact, near_duplicate_groups=near_groups,
        near_duplicate_pairs=findings, groups=all_groups, label_conflicts=conflicts,
        near_duplicate_params=params if near_duplicates else None, errors=errors, warnings=warnings,
        near_duplicate_candidates=candidates, near_duplicate_weakest_links=weakest_links)
    report.seconds = time.perf_counter() - started
    return report


def _verdict(scan: ScanResult, counts: dict[str, int], exact: list, near: list,
             conflicts: list) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    root = scan.root
    if not scan.classes:
        hint = (f" ({len(scan.stray_files)} files lie directly in it)" if scan.stray_files else "")
        errors.append(f"no class folders in {root}{hint}: put each class's images in its own "
                      f"sub-folder, e.g. {root}/cat/1.jpg and {root}/dog/1.jpg")
    elif len(scan.classes) == 1:
        errors.append(f"only one class ({scan.classes[0]!r}): a classifier needs at least two "
                      "class folders")
    for name, n in counts.items():
        if n < MIN_IMAGES_PER_CLASS:
            errors.append(f"class {name!r} has {n} readable image{'s' if n != 1 else ''}; each class "
                          f"needs at least {MIN_IMAGES_PER_CLASS} (add images or remove the folder)")
        elif n < FEW_IMAGES_PER_CLASS:
            warnings.append(f"class {name!r} has only {n} images: expect unreliable results")
    readable = [n for n in counts.values() if n > 0]
    if len(readable) >= 2 and max(readable) / min(readable) > IMBALANCE_WARNING:
        warnings.append(f"classes are imbalanced ({max(readable)} vs {min(readable)} images); "
                        "accuracy alone will flatter the model, read per-class recall")
    if scan.unreadable:
        warnings.append(f"{len(scan.unreadable)} unreadable file(s) will be skipped")
    if scan.stray_files:
        warnings.append(f"{len(scan.stray_files)} file(s) directly in {root} belong to no class "
                        "and are ignored")
    mism = [r for r in scan.records if r.extension_claims]
    if mism:
        warnings.append(f"{len(mism)} file(s) have an extension that does not match their content "
                        "(read by content, so they are used)")
    if exact or near:
        warnings.append(f"{len(exact)} exact and {len(near)} near-duplicate group(s): the split keeps "
                        "each group on one side")
    if conflicts:
        warnings.append(f"{len(conflicts)} duplicate group(s) span different classes (label "
                        "conflicts): check which label is right")
    small = [r for r in scan.records if min(r.width, r.height) < SMALL_SIDE_WARNING]
    if small:
        warnings.append(f"{len(small)} image(s) have a side under {SMALL_SIDE_WARNING} px")
    return errors, warnings
