"""Near-duplicate audit on aligned 112x112 face crops: false pairs across people, recall of copies.

    PYTHONPATH=src .venv/bin/python bench/face_crops_audit.py [--people DIR] [--data DIR]

Builds a class-folder dataset (in a temporary folder, or in --data when that does not exist yet)
from LFW deep-funneled photos of different people (one photo each, face centred): a centre crop
resized to 112x112 is an aligned face crop. People are spread over 10 class folders. Two kinds of
hard case are added:

* layout twins: 10 pairs of people (in different classes) whose crops are put over one common
  low-pass base, so that their pHash distance is small while their faces differ: what tightly
  aligned crops of different people look like to a 64-bit DCT hash (issue 18);
* true copies: 30 other crops get one copy each in their own class (JPEG re-encode, 3 px or 6 px
  re-crop, colour shift, downscale + re-encode).

A pair is the same photo exactly when both files show the same person. The audit runs in-process
on whatever ``image_classifier`` is importable, so pointing PYTHONPATH at another checkout's src
compares versions on the same folder (pass --data to keep it between runs).
"""
from __future__ import annotations

import argparse
import collections
import io
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from image_classifier.data.check import audit_dataset

CLASSES = 10
TWIN_PAIRS = 10
COPIES = 30


def face_crop(path: Path, side: int = 112, box: int = 128) -> Image.Image:
    im = Image.open(path).convert("RGB")
    left, top = (im.width - box) // 2, (im.height - box) // 2
    return im.crop((left, top, left + box, top + box)).resize((side, side), Image.BICUBIC)


def same_layout(a: Image.Image, b: Image.Image, sigma: float = 3.0) -> tuple[Image.Image, Image.Image]:
    fa, fb = (np.asarray(x, dtype=np.float32) for x in (a, b))
    base = cv2.GaussianBlur((fa + fb) / 2, (0, 0), sigma)
    out = [np.clip(base + f - cv2.GaussianBlur(f, (0, 0), sigma), 0, 255).astype(np.uint8) for f in (fa, fb)]
    return Image.fromarray(out[0]), Image.fromarray(out[1])


def jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def copy_of(face: Image.Image, k: int) -> tuple[str, bytes]:
    w = face.width
    variants = [
        ("q40", lambda: jpeg(face, 40)),
        ("recrop3", lambda: jpeg(face.crop((3, 3, w, w)).resize((w, w), Image.BICUBIC), 90)),
        ("colour", lambda: jpeg(Image.fromarray(np.clip(
            np.asarray(face, dtype=np.int16) + np.array([30, -10, -25], dtype=np.int16), 0, 255)
            .astype(np.uint8)), 90)),
        ("small", lambda: jpeg(face.resize((96, 96), Image.LANCZOS), 70)),
        ("recrop6", lambda: jpeg(face.crop((4, 3, w - 2, w)).resize((w, w), Image.BICUBIC), 90)),
    ]
    name, make = variants[k % len(variants)]
    return name, make()


def build(people_dir: Path, root: Path) -> None:
    people = sorted(people_dir.glob("*.jpg"))
    faces = {p.stem: face_crop(p) for p in people}
    names = list(faces)
    for a, b in zip(names[0:2 * TWIN_PAIRS:2], names[1:2 * TWIN_PAIRS:2]):
        faces[a], faces[b] = same_layout(faces[a], faces[b])
    for k, name in enumerate(names):
        folder = root / f"c{k % CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.jpg").write_bytes(jpeg(faces[name], 95))
        if 2 * TWIN_PAIRS <= k < 2 * TWIN_PAIRS + COPIES:
            variant, data = copy_of(faces[name], k)
            (folder / f"{name}__{variant}.jpg").write_bytes(data)


def person(rel_path: str) -> str:
    return Path(rel_path).stem.split("__")[0]


def report(root: Path) -> None:
    t0 = time.perf_counter()
    audit = audit_dataset(root)
    seconds = time.perf_counter() - t0
    pairs = audit.near_duplicate_pairs
    false = [p for p in pairs if person(p.a) != person(p.b)]
    # build() made twins of the first 2 * TWIN_PAIRS people in name order
    twins = set(sorted(p.stem for p in root.glob("*/*.jpg") if "__" not in p.stem)[:2 * TWIN_PAIRS])
    expected = {person(p.stem) for p in root.glob("*/*__*.jpg")}
    found = {person(p.a) for p in pairs if person(p.a) == person(p.b)}
    print(f"{audit.images} images in {len(audit.classes)} classes, {len(expected)} true copy pairs")
    print(f"audit: {seconds:.1f} s")
    counts = getattr(audit, "near_duplicate_candidates", None)
    if counts:
        for branch, c in counts.items():
            print(f"candidates {branch:15s} considered {c.considered:4d}  accepted {c.accepted:3d}  "
                  f"rejected {c.rejected:4d}")
    else:
        print("candidates: not reported by this version")
    print("accepted pairs by method:", dict(sorted(collections.Counter(p.method for p in pairs).items())))
    print(f"pairs across different people: {len(false)} "
          f"({sum(person(p.a) in twins and person(p.b) in twins for p in false)} between layout twins)")
    for p in false:
        print(f"  {p.a} ~ {p.b}  method {p.method} ncc {p.ncc} phash distance {p.phash_distance}")
    print(f"true copies found: {len(found & expected)}/{len(expected)}"
          + (f"  missed: {sorted(expected - found)}" if expected - found else ""))
    print(f"near-duplicate groups: {len(audit.near_duplicate_groups)}, "
          f"label conflicts: {len(audit.label_conflicts)}")
    weakest = getattr(audit, "near_duplicate_weakest_links", None)
    if weakest:
        nccs = [w.ncc for w in weakest if w.ncc is not None]
        print(f"weakest links: lowest ncc {min(nccs):.3f}" if nccs else "weakest links: no ncc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = Path(__file__).resolve().parents[1]
    ap.add_argument("--people", type=Path, default=repo.parent / "shared" / "datasets" / "unknown_people")
    ap.add_argument("--data", type=Path, help="dataset folder: built when absent, reused when present")
    args = ap.parse_args()
    if args.data is not None:
        if not args.data.exists():
            build(args.people, args.data)
        report(args.data)
        return
    with tempfile.TemporaryDirectory() as tmp:
        build(args.people, Path(tmp) / "faces")
        report(Path(tmp) / "faces")


if __name__ == "__main__":
    main()
