"""Small square pictures of faces for people to look at: contact sheets, suspect labels, the report.

One decode per photo gives the thumbnails of all its faces (:func:`face_thumbnails`); boxes are in
the photo's own (EXIF-oriented) pixels, as :class:`~image_classifier.faces.FaceAnalysis` gives them.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from PIL import Image

from image_classifier.data.decode import decode_image

#: Side of a face thumbnail, in pixels.
THUMB_SIDE = 112
#: The box is grown by this fraction of its side on every side: hair and chin help a person
#: recognise a face that the detector's tight box crops.
MARGIN = 0.3
JPEG_QUALITY = 85


def _square(box: Sequence[float], scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The square around ``box`` (grown by :data:`MARGIN`), in the decoded copy's pixels, clipped."""
    x0, y0, x1, y1 = (v * scale for v in box)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    right, bottom = round(cx + side / 2), round(cy + side / 2)
    return max(0, left), max(0, top), min(width, max(right, left + 1)), min(height, max(bottom, top + 1))


def face_thumbnails(data: bytes, boxes: Sequence[Sequence[float]], *, side: int = THUMB_SIDE,
                    path: str | None = None) -> list[Image.Image]:
    """One ``side`` x ``side`` RGB picture per face box of the photo in ``data`` (raises
    :class:`~image_classifier.errors.UnreadableImageError` for a photo that cannot be decoded).
    Without boxes, the whole photo, centre-cropped."""
    # JPEG draft decoding at a reduced scale: enough pixels for a small face's thumbnail, a fraction
    # of the cost of a full decode for a big photo.
    decoded = decode_image(data, path=path, target_size=4 * side)
    image = decoded.image
    scale = image.width / decoded.width
    if not boxes:
        short = min(image.size)
        left, top = (image.width - short) // 2, (image.height - short) // 2
        return [image.crop((left, top, left + short, top + short)).resize((side, side), Image.Resampling.BILINEAR)]
    out = []
    for box in boxes:
        crop = image.crop(_square(box, scale, image.width, image.height))
        # Pad a crop clipped by the photo's edge back to a square, so faces are never stretched.
        if crop.width != crop.height:
            canvas = Image.new("RGB", (max(crop.size),) * 2, (240, 240, 240))
            canvas.paste(crop, ((canvas.width - crop.width) // 2, (canvas.height - crop.height) // 2))
            crop = canvas
        out.append(crop.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0))
    return out


def jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def data_uri(image: Image.Image) -> str:
    """The picture as a ``data:image/jpeg;base64,...`` URI (self-contained HTML)."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(image)).decode("ascii")
