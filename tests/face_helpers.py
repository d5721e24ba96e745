"""Group photos made from real ones, for the tests and for ``bench/photos.py``.

``face_collage(photos, out)`` crops the largest face of each photo (found by the library's own
face pipeline) with a margin of hair and background around it, and tiles the crops three per row
on a grey background: a "group photo" whose every face is a known person's or a stranger's, with
the tile of each face returned so that a face found in the collage can be matched to its photo.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from image_classifier.data.decode import load_image
from image_classifier.faces import analyse_bytes

TILE = 260  # pixels per tile: faces come out about 150 px wide, found by the first (HOG) step
GAP = 20
PER_ROW = 3


def face_collage(photos: list[Path], out: Path) -> list[tuple[int, int, int, int]]:
    """Write the collage of ``photos``' largest faces to ``out``; returns each photo's tile
    (x0, y0, x1, y1) in the collage, in order. A photo without a face is an error."""
    rows = -(-len(photos) // PER_ROW)
    canvas = Image.new("RGB", (PER_ROW * (TILE + GAP) + GAP, rows * (TILE + GAP) + GAP), (128, 128, 128))
    tiles = []
    for k, photo in enumerate(photos):
        face = analyse_bytes(Path(photo).read_bytes(), str(photo)).face
        if face is None:
            raise ValueError(f"{photo}: no face to put in the collage")
        image = load_image(photo)
        x0, y0, x1, y1 = face.box
        side = 1.7 * max(x1 - x0, y1 - y0)  # the face with hair, chin and some background
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        crop = image.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
        left, top = GAP + (k % PER_ROW) * (TILE + GAP), GAP + (k // PER_ROW) * (TILE + GAP)
        canvas.paste(crop.resize((TILE, TILE), Image.Resampling.LANCZOS), (left, top))
        tiles.append((left, top, left + TILE, top + TILE))
    canvas.save(out, quality=95)
    return tiles


def tile_of(box: list[float], tiles: list[tuple[int, int, int, int]]) -> int | None:
    """The index of the tile holding the centre of a face ``box`` found in the collage."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for i, (x0, y0, x1, y1) in enumerate(tiles):
        if x0 <= cx < x1 and y0 <= cy < y1:
            return i
    return None
