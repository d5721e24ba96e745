"""Bigger class folders for the scale benchmark, written under /tmp (never into the repository).

    .venv/bin/python bench/folders.py OUT --images 2000 [--kind synthetic|augmented]
        [--source ../shared/datasets/athletes] [--size 224] [--seed 0]

Two kinds, both 224 x 224 JPEGs with the classes kept:

* ``synthetic`` (default): every image is a new random scene (a colour gradient, 12-20 filled
  shapes, a few lines, grain, a slight blur), each class with its own palette and favourite shape,
  so the classes are learnable and no two images share content. This is what a real collection of
  distinct photos costs the audit: the near-duplicate search confirms (almost) nothing, so its
  candidate and verification stages see ordinary traffic.
* ``augmented``: copies of the source photos (default the athletes folder) each with a random
  crop (35-90 % of the area), flip, rotation (+-20 degrees), colour jitter and JPEG quality, so no
  two files are byte-identical. The tool's near-duplicate audit is *built* to catch re-crops of one
  photo, so it groups most copies of one source photo together (the bench reports how many): a
  worst case for its verification stage (many true candidate pairs per photo) and for the split
  (big groups), not a model of a real collection.

File names are ``<class>/<kind>_<index>.jpg``; the same seed writes the same bytes.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEFAULT_SOURCE = SHARED / "datasets" / "athletes"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}

# Per class: a base hue family and a favourite shape, so a small network can tell classes apart.
_SHAPES = ("ellipse", "rectangle", "polygon")


def _refuse_repo_path(out: Path) -> None:
    if ROOT in out.resolve().parents or out.resolve() == ROOT:
        raise SystemExit(f"refusing to write generated images into the repository ({out}); use /tmp")


def _source_classes(source: Path) -> dict[str, list[Path]]:
    classes = {}
    for d in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            classes[d.name] = files
    if not classes:
        raise SystemExit(f"{source} holds no class folders with images")
    return classes


def _spread(total: int, classes: list[str]) -> dict[str, int]:
    base, extra = divmod(total, len(classes))
    return {c: base + (1 if i < extra else 0) for i, c in enumerate(classes)}


def synthetic_image(rng: random.Random, class_index: int, size: int) -> Image.Image:
    """One random scene in the palette and shape of ``class_index``."""
    hue = (class_index * 0.37) % 1.0

    def colour(jitter: float = 0.12) -> tuple[int, int, int]:
        h = (hue + rng.uniform(-jitter, jitter)) % 1.0
        s, v = rng.uniform(0.4, 1.0), rng.uniform(0.3, 1.0)
        rgb = Image.new("HSV", (1, 1), (int(h * 255), int(s * 255), int(v * 255))).convert("RGB")
        return rgb.getpixel((0, 0))

    a, b = np.array(colour(0.5), np.float32), np.array(colour(0.5), np.float32)
    t = np.linspace(0, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None])
    ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
    img = Image.fromarray((a + (b - a) * ramp[..., None]).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    favourite = _SHAPES[class_index % len(_SHAPES)]
    for _ in range(rng.randint(12, 20)):
        kind = favourite if rng.random() < 0.7 else rng.choice(_SHAPES)
        x0, y0 = rng.uniform(-0.1, 0.9) * size, rng.uniform(-0.1, 0.9) * size
        w, h = rng.uniform(0.05, 0.45) * size, rng.uniform(0.05, 0.45) * size
        fill = colour()
        if kind == "ellipse":
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
        elif kind == "rectangle":
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            pts = [(x0 + rng.uniform(0, w), y0 + rng.uniform(0, h)) for _ in range(rng.randint(3, 6))]
            draw.polygon(pts, fill=fill)
    for _ in range(rng.randint(2, 6)):
        draw.line([(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(2)], fill=colour(0.5),
                  width=rng.randint(1, 5))
    grain = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, (size, size, 3))
    arr = np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))


def augmented_image(rng: random.Random, photo: Image.Image, size: int) -> Image.Image:
    """A random crop, flip, rotation and colour jitter of ``photo``, resized to size x size."""
    w, h = photo.size
    area = rng.uniform(0.35, 0.9) * w * h
    aspect = rng.uniform(0.75, 1.33)
    cw, ch = min(w, int(round((area * aspect) ** 0.5))), min(h, int(round((area / aspect) ** 0.5)))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = photo.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = img.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR, expand=False)
    img = img.resize((size, size), Image.BILINEAR)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(rng.uniform(0.7, 1.3))
    return img


def make_folder(out: str | Path, images: int, *, kind: str = "synthetic", source: Path = DEFAULT_SOURCE,
                size: int = 224, seed: int = 0) -> dict[str, int]:
    """Write ``images`` JPEGs under ``out/<class>/``; returns class -> count. Idempotent per seed:
    an existing folder with the same number of files is kept."""
    out = Path(out)
    _refuse_repo_path(out)
    classes = _source_classes(source)
    counts = _spread(images, list(classes))
    existing = sum(1 for _ in out.rglob("*.jpg")) if out.is_dir() else 0
    if existing == images:
        return counts
    if existing:
        raise SystemExit(f"{out} already holds {existing} images, not {images}: remove it first")
    rng = random.Random(seed)
    for ci, (name, n) in enumerate(counts.items()):
        (out / name).mkdir(parents=True, exist_ok=True)
        photos = classes[name]
        for k in range(n):
            if kind == "synthetic":
                img = synthetic_image(rng, ci, size)
            elif kind == "augmented":
                with Image.open(photos[k % len(photos)]) as src:
                    img = augmented_image(rng, ImageOps.exif_transpose(src).convert("RGB"), size)
            else:
                raise SystemExit(f"unknown kind {kind!r}: synthetic or augmented")
            img.save(out / name / f"{kind}_{k:05d}.jpg", quality=rng.randint(80, 95))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--kind", choices=("synthetic", "augmented"), default="synthetic")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = make_folder(args.out, args.images, kind=args.kind, source=args.source, size=args.size,
                         seed=args.seed)
    print(f"{args.out}: {sum(counts.values())} {args.kind} images, "
          + ", ".join(f"{c} {n}" for c, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
