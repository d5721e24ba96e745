"""Turning untrusted bytes into an RGB picture, the same way for training, checking and serving.

One function, :func:`load_image`, is the only place the project decodes an image, so the training
pipeline, the dataset checks and the web app see exactly the same pixels for the same file (the
original study's web app ignored EXIF orientation while its training data had none: a phone photo
arrived rotated). Everything that can go wrong with a user's file is turned into
:class:`~image_classifier.errors.UnreadableImageError` with a reason a person can act on.
"""
from __future__ import annotations

import importlib
import io
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Generic, Iterable, TypeVar

import numpy as np
from PIL import Image, ImageOps

from image_classifier.errors import UnreadableImageError

log = logging.getLogger(__name__)

# Largest image (width x height, as declared in the file header) that is decoded at all.
# 64 MP covers the full-resolution output of mainstream cameras (12-50 MP phones in
# full-resolution mode, 45-61 MP full-frame bodies), yet bounds the worst single decode of a format
# without JPEG draft mode (PNG, WebP, TIFF) to about 200 MB of RGB: a crafted 20000x20000 PNG is a
# few hundred bytes on disk but 1.2 GB once decoded, and the web app decodes uploads.
MAX_PIXELS = 64_000_000

# A photo file larger than this is not a photo this tool should read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024

# Formats we decode. Pillow can open more (EPS runs Ghostscript, TGA has no magic number and claims
# random bytes, PSD/ICO/... are not photos): restricting the plugins keeps uploads from reaching them.
# (MPO, the multi-picture JPEG some cameras write, is opened by the JPEG plugin; its first frame is
# an ordinary JPEG.) AVIF is only there when this Pillow was built with libavif.
_WANTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "AVIF", "PPM")
for _plugin in ("Jpeg", "Png", "Gif", "Bmp", "WebP", "Tiff", "Avif", "Ppm"):
    try:  # importing a plugin registers its opener; Image.init() would import all ~40 of them
        importlib.import_module(f"PIL.{_plugin}ImagePlugin")
    except ImportError:  # pragma: no cover - depends on how Pillow was built
        pass
SUPPORTED_FORMATS = tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)

# Which content formats each file extension promises; used to report "extension lies" files.
EXTENSION_FORMATS: dict[str, frozenset[str]] = {
    ext: frozenset(formats) for extensions, formats in (
        (".jpg .jpeg .jpe .jfif", ("JPEG", "MPO")), (".png", ("PNG",)), (".gif", ("GIF",)), (".bmp", ("BMP",)),
        (".webp", ("WEBP",)), (".tif .tiff", ("TIFF",)), (".avif", ("AVIF",)), (".ppm .pgm .pbm", ("PPM",)),
    ) for ext in extensions.split()
}

# Pillow warns (DecompressionBombWarning) when it opens an image above its own process-global
# MAX_IMAGE_PIXELS. Our per-call ``max_pixels`` check is the one that decides, so Pillow's warning
# would only be noise on stderr; errors above twice its limit still reach us and are converted.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus what the file said about itself.

    ``width``/``height`` are the full-resolution size after EXIF orientation (what a person sees),
    even when draft mode decoded a smaller ``image``.
    """

    image: Image.Image
    format: str
    width: int
    height: int
    mode: str  # the colour mode stored in the file (e.g. "P", "RGBA", "CMYK", "I;16")


def read_source(source: str | os.PathLike | bytes | BinaryIO) -> tuple[bytes, str | None]:
    """Return the bytes of ``source`` and a name for messages (the path, or None for bytes/streams)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            size = os.stat(path).st_size
            if size > MAX_FILE_BYTES:
                raise UnreadableImageError(
                    f"file is {size / 1e6:.0f} MB, more than the {MAX_FILE_BYTES / 1e6:.0f} MB "
                    "accepted for one photo", path, "too_large")
            with open(path, "rb") as fh:
                return fh.read(), path
        except FileNotFoundError:
            raise UnreadableImageError("file not found", path, "io") from None
        except IsADirectoryError:
            raise UnreadableImageError("is a directory, not a file", path, "io") from None
        except PermissionError:
            raise UnreadableImageError("permission denied", path, "io") from None
        except OSError as err:
            raise UnreadableImageError(f"cannot read file: {err.strerror or err}", path, "io") from None
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        name = name if isinstance(name, str) else None
        try:
            data = source.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            raise UnreadableImageError(f"cannot read stream: {err}", name, "io") from None
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("load_image needs a binary stream (opened with 'rb')")
        if len(data) > MAX_FILE_BYTES:
            raise UnreadableImageError(
                f"more than the {MAX_FILE_BYTES / 1e6:.0f} MB accepted for one photo", name, "too_large")
        return bytes(data), name
    raise TypeError(f"load_image expects a path, bytes or a binary stream, not {type(source).__name__}")


# Leading bytes of the formats decoded here. Bytes that start like one of them but that no decoder
# can identify are a broken image, not "not an image".
_IMAGE_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF",
                     b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _signature_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for sig, fmt in _IMAGE_SIGNATURES.items() if data.startswith(sig)), None)


def _not_identified(data: bytes, path: str | None) -> UnreadableImageError:
    """The error for (non-empty) bytes that no supported image decoder identifies."""
    fmt = _signature_format(data)
    if fmt:
        return UnreadableImageError(
            f"truncated or corrupt image: the file starts like a {fmt} but cannot be decoded", path, "corrupt")
    return UnreadableImageError(_describe_unsupported(data), path, "unsupported")


def _describe_unsupported(data: bytes) -> str:
    """A short reason for bytes that are not an image in a supported format."""
    head = data[:512]
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypmif1", b"ftypmsf1"):
        return "HEIC/HEIF photo, which is not supported: export or convert it to JPEG"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "not an image: an HTML page (a failed download?)"
    if lowered.startswith(b"<svg") or (lowered.startswith(b"<?xml") and b"<svg" in lowered):
        return "SVG vector drawings are not supported: export it as PNG"
    if head.startswith(b"%PDF"):
        return "not an image: a PDF document"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "not an image: the file holds text"
        except UnicodeDecodeError:
            pass
    return "not an image: content matches no supported format (" + ", ".join(SUPPORTED_FORMATS) + ")"


def _limit_reason(width: int, height: int, max_pixels: int) -> str:
    return (f"too many pixels: {width}x{height} = {width * height / 1e6:.1f} MP, more than the "
            f"{max_pixels / 1e6:.1f} MP limit (a decompression bomb, or a photo to downscale first)")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB; transparent areas become white, as a viewer shows them."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        # A palette with a transparent index must go through RGBA, or transparent pixels take
        # whatever colour the palette entry happens to hold (often black).
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "L" and "transparency" in im.info:
        return _to_rgb(im.convert("LA"))
    if mode.startswith("I;16") or mode == "I":
        # Pillow's own I -> RGB conversion clips at 255, which turns a 16-bit photo white.
        # 16-bit greyscale (PNG, TIFF) spans 0..65535: scale it down to 0..255.
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(arr / 257.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        if arr.size and arr.max() <= 1.0:  # floats in 0..1 (scientific TIFFs)
            arr = arr * 255.0
        return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8)).convert("RGB")
    # L, 1, CMYK, YCbCr, HSV and the rest have a direct Pillow conversion.
    return im.convert("RGB")


def decode_image(data: bytes, *, path: str | None = None, target_size: int | None = None,
                 max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode ``data`` fully; see :func:`load_image`. Also returns format and full-resolution size."""
    if target_size is not None and target_size < 1:
        raise ValueError(f"target_size must be a positive number of pixels, not {target_size}")
    if not data:
        raise UnreadableImageError("empty file (0 bytes)", path, "empty")
    try:
        im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as err:
        # Above twice Pillow's own (process-global) limit Image.open refuses by itself.
        match = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(match.group(1)) / 1e6:.1f} MP" if match else "too many pixels"
        raise UnreadableImageError(f"too many pixels: {pixels}, more than the "
                                   f"{max_pixels / 1e6:.1f} MP limit", path, "too_large") from None
    except Image.UnidentifiedImageError:
        raise _not_identified(data, path) from None
    except Exception as err:  # noqa: BLE001 - a plugin choking on a malformed header
        raise UnreadableImageError(_load_reason(err, header=True), path) from None

    try:
        fmt = im.format or "unknown"
        stored_mode = im.mode
        width, height = im.size
        # Checked on the header's size, before any pixel data is decoded.
        if width * height > max_pixels:
            raise UnreadableImageError(_limit_reason(width, height, max_pixels), path, "too_large")
        if width < 1 or height < 1:
            raise UnreadableImageError(f"image has no pixels ({width}x{height})", path)
        if target_size is not None and fmt in ("JPEG", "MPO"):
            # libjpeg can decode at 1/2, 1/4 or 1/8 scale for a fraction of the cost. draft() picks
            # the smallest scale that keeps *both* sides >= the requested size; asking for a square
            # keeps the shorter side >= target_size whatever the orientation.
            im.draft("RGB", (target_size, target_size))
        im.load()
    except UnreadableImageError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure means the file is unusable
        raise UnreadableImageError(_load_reason(err), path) from None

    try:
        # Applies the EXIF Orientation tag (phones store photos sideways and set the tag).
        oriented = ImageOps.exif_transpose(im)
    except Exception as err:  # noqa: BLE001 - a broken EXIF block leaves valid pixels
        log.debug("%s: ignoring unreadable EXIF orientation (%s)", path or "image", err)
        oriented = im
    if oriented.size != im.size:  # rotated by 90 or 270 degrees
        width, height = height, width

    try:
        rgb = _to_rgb(oriented)
    except Exception as err:  # noqa: BLE001 - e.g. a colour mode Pillow cannot convert
        raise UnreadableImageError(f"unsupported colour mode {stored_mode}: {err}", path,
                                   "unsupported") from None
    if rgb is im:
        rgb = im.copy()  # detach from the file object so nothing keeps the decoder alive
    return DecodedImage(rgb, fmt, width, height, stored_mode)


def _load_reason(err: Exception, *, header: bool = False) -> str:
    text = str(err)
    part = "header" if header else "data"
    if "truncat" in text.lower() or isinstance(err, EOFError) or "broken data stream" in text:
        return f"truncated image {part} ({text})" if text else f"truncated image {part}"
    return f"corrupt image {part}: {type(err).__name__}: {text}"


def load_image(source: str | os.PathLike | bytes | BinaryIO, *, target_size: int | None = None,
               max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode a photo into a fully loaded RGB :class:`PIL.Image.Image` with EXIF orientation applied.

    ``source`` is a path, the file's bytes, or a binary stream. The format is found from the
    content, never from the file name. When ``target_size`` is given and the file is a JPEG, it is
    decoded at the largest reduction (1/2, 1/4 or 1/8) whose shorter side is still at least
    ``target_size``; the result is *not* resized to ``target_size``, callers resize.
    Palette (with transparency), RGBA/LA (composited on white), greyscale, 16-bit and CMYK images are
    converted to 8-bit RGB. Images whose header declares more than ``max_pixels`` pixels are refused
    before their pixel data is decoded.

    Raises :class:`~image_classifier.errors.UnreadableImageError` (with ``reason`` and ``path``) for
    every problem with the input: missing, empty, not an image, unsupported, truncated, corrupt, too
    many pixels. No other exception escapes for bad input bytes.
    """
    data, path = read_source(source)
    return decode_image(data, path=path, target_size=target_size, max_pixels=max_pixels).image


def extension_mismatch(path: str | Path, fmt: str) -> str | None:
    """The format a file's extension promises when its content is another one, else None.

    Unknown or missing extensions promise nothing and are not reported.
    """
    expected = EXTENSION_FORMATS.get(Path(path).suffix.lower())
    if expected is None or fmt in expected:
        return None
    return "JPEG" if "JPEG" in expected else sorted(expected)[0]


Item = TypeVar("Item")
Decoded = TypeVar("Decoded")


@dataclass
class DecodedItems(Generic[Decoded]):
    """What :func:`decode_each` made of a list: the readable items' results and why the rest failed."""

    images: list[Decoded]
    #: For each entry of ``images``, the index of its item in the input.
    kept: list[int]
    #: Input index -> the error that made the item unreadable.
    failures: dict[int, UnreadableImageError] = field(default_factory=dict)


def decode_each(items: Iterable[Item], decode: Callable[[Item], Decoded], *, what: str | None = "image",
                name: Callable[[Item], Any] = str, mapper: Callable[..., Iterable[Any]] = map) -> DecodedItems[Decoded]:
    """Decode every item with ``decode``, leaving out (and recording) the ones that are unreadable.

    The one loop behind training, evaluation, export and ``predict``: a bad file among many is
    skipped, never fatal, and its :class:`~image_classifier.errors.UnreadableImageError` is kept
    for the caller to report. Each skip is logged as a warning, "skipping unreadable {what}
    {name(item)}: {reason}", unless ``what`` is None (a caller that prints failures itself).
    ``mapper`` runs ``decode`` over the items, e.g. a thread pool's ``map``: the results keep
    the input's order whatever it is.
    """
    def attempt(item: Item) -> tuple[Decoded | None, UnreadableImageError | None]:
        try:
            return decode(item), None
        except UnreadableImageError as err:
            return None, err

    items = list(items)
    out: DecodedItems[Decoded] = DecodedItems([], [])
    for i, (image, err) in enumerate(mapper(attempt, items)):
        if err is None:
            out.images.append(image)  # type: ignore[arg-type]  # decoded: not None
            out.kept.append(i)
        else:
            out.failures[i] = err
            if what is not None:
                log.warning("skipping unreadable %s %s: %s", what, name(items[i]), err.reason)
    return out
