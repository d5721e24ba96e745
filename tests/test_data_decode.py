"""load_image: every format and corruption case, written by the tests with Pillow."""
from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from image_classifier.data.decode import (
    MAX_PIXELS, SUPPORTED_FORMATS, decode_each, decode_image, extension_mismatch, load_image)
from image_classifier.errors import UnreadableImageError


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def textured(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BILINEAR)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (the pixel data is not there)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# ---- formats and colour modes -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_every_supported_format_decodes_to_rgb(fmt):
    im = Image.new("RGB", (40, 30), (200, 30, 30))
    out = load_image(encode(im, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)
    r, g, b = out.getpixel((20, 15))
    assert r > 150 and g < 80 and b < 80  # still red (GIF palettes and JPEG shift it a little)


def test_rgba_is_composited_on_white_not_black():
    im = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    im.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    out = load_image(encode(im, "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)


def test_half_transparent_rgba_blends_with_white():
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    r, g, b = load_image(encode(im, "PNG")).getpixel((1, 1))
    assert 120 <= r <= 135 and r == g == b


def test_la_greyscale_with_alpha():
    im = Image.new("LA", (4, 4), (0, 0))  # transparent black
    assert load_image(encode(im, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparent_index_becomes_white():
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))  # index 0 black, index 1 green
    im.putpixel((1, 1), 1)
    data = encode(im, "PNG", transparency=0)
    out = load_image(data)
    assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent, not palette black
    assert out.getpixel((1, 1)) == (0, 200, 0)


def test_palette_without_transparency():
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    assert load_image(encode(im, "PNG")).getpixel((3, 3)) == (10, 20, 30)


def test_greyscale_becomes_three_equal_channels():
    out = load_image(encode(Image.new("L", (5, 5), 77), "PNG"))
    assert out.mode == "RGB" and out.getpixel((2, 2)) == (77, 77, 77)


def test_16_bit_greyscale_is_scaled_not_clipped():
    arr = np.zeros((4, 8), dtype=np.uint16)
    arr[:, :4] = 65535
    arr[:, 4:] = 32896  # 128 * 257
    data = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = load_image(data)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((6, 0)) == (128, 128, 128)  # Pillow's own convert would give white


def test_cmyk_jpeg():
    im = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    data = encode(im, "JPEG")
    d = decode_image(data)
    assert d.mode == "CMYK" and d.image.mode == "RGB"
    r, g, b = d.image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied():
    # Stored 40x20, left half red, right half blue; Orientation 6 = "rotate 90 degrees clockwise
    # to display". Displayed: 20 wide, 40 tall, red on top.
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(im, "JPEG", exif=exif, quality=95)
    d = decode_image(data)
    assert d.image.size == (20, 40) and (d.width, d.height) == (20, 40)
    top, bottom = d.image.getpixel((10, 5)), d.image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_orientation_survives_draft_mode():
    im = Image.new("RGB", (800, 400), (255, 0, 0))
    im.paste((0, 0, 255), (400, 0, 800, 400))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 counter-clockwise: left half ends up at the bottom
    d = decode_image(encode(im, "JPEG", exif=exif), target_size=100)
    assert (d.width, d.height) == (400, 800)
    w, h = d.image.size
    assert w < h and min(w, h) >= 100 and w < 400  # reduced, still portrait
    assert d.image.getpixel((w // 2, h - 5))[0] > 200  # red at the bottom


@pytest.mark.parametrize("size,target", [((800, 600), 100), ((612, 408), 224), ((612, 408), 100),
                                         ((408, 612), 100), ((2000, 1000), 224), ((3000, 250), 224),
                                         ((1600, 1600), 200), ((300, 300), 224)])
def test_draft_keeps_shorter_side_at_least_target(size, target):
    data = encode(textured(size), "JPEG")
    out = load_image(data, target_size=target)
    assert min(out.size) >= target
    full = load_image(data)
    assert full.size == size
    scale = round(size[0] / out.size[0])  # libjpeg decodes at 1/1, 1/2, 1/4 or 1/8, rounding sizes up
    assert scale in (1, 2, 4, 8) and out.size == tuple(-(-side // scale) for side in size)
    # It reduces whenever a 1/2 reduction would still be big enough.
    if min(size) // 2 >= target:
        assert out.size[0] < size[0]


def test_draft_is_not_applied_to_png():
    out = load_image(encode(textured((800, 600)), "PNG"), target_size=100)
    assert out.size == (800, 600)  # callers resize; only JPEG has a cheap reduced decode


def test_sources_path_bytes_stream(tmp_path):
    data = encode(textured(), "PNG")
    p = tmp_path / "x.png"
    p.write_bytes(data)
    a = np.asarray(load_image(p))
    assert np.array_equal(a, np.asarray(load_image(str(p))))
    assert np.array_equal(a, np.asarray(load_image(data)))
    with open(p, "rb") as fh:
        assert np.array_equal(a, np.asarray(load_image(fh)))
    assert np.array_equal(a, np.asarray(load_image(io.BytesIO(data))))


def test_png_named_jpg_is_read_by_content(tmp_path):
    p = tmp_path / "photo.jpg"
    p.write_bytes(encode(textured(), "PNG"))
    d = decode_image(p.read_bytes())
    assert d.format == "PNG" and d.image.size == (64, 48)
    assert extension_mismatch(p, d.format) == "JPEG"
    assert extension_mismatch("a.JPEG", "JPEG") is None
    assert extension_mismatch("noext", "PNG") is None


# ---- broken input -------------------------------------------------------------------------------

def reason_of(source, **kw) -> str:
    with pytest.raises(UnreadableImageError) as info:
        load_image(source, **kw)
    return info.value.reason


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(UnreadableImageError) as info:
        load_image(p)
    assert "empty" in info.value.reason and info.value.path == str(p)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a photo\n")
    assert "text" in reason_of(p)


def test_html_page_named_jpg():
    assert "HTML" in reason_of(b"<!DOCTYPE html><html><body>404</body></html>")


def test_heic_gets_a_helpful_reason():
    assert "HEIC" in reason_of(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40)


def test_random_bytes():
    assert "not an image" in reason_of(bytes(random.Random(1).randrange(256) for _ in range(500)))


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.95])
def test_truncated_jpeg(fraction):
    data = encode(textured((128, 96)), "JPEG")
    assert "truncated" in reason_of(data[: int(len(data) * fraction)])


def test_jpeg_cut_inside_header():
    data = encode(textured((128, 96)), "JPEG")
    assert "truncated" in reason_of(data[:60])


def test_truncated_png():
    data = encode(textured((128, 96)), "PNG")
    assert "truncated" in reason_of(data[: len(data) // 2])


def kind_of(source, **kw) -> str:
    with pytest.raises(UnreadableImageError) as info:
        load_image(source, **kw)
    return info.value.kind


def test_each_problem_carries_its_kind(tmp_path):
    # Callers act on the kind (the web API turns it into 400/413/415), never on the reason's wording.
    jpeg = encode(textured((128, 96)), "JPEG")
    assert kind_of(b"") == "empty"
    assert kind_of(tmp_path / "nope.jpg") == "io" and kind_of(tmp_path) == "io"
    assert kind_of(png_header_only(20000, 20000)) == "too_large"
    assert kind_of(encode(textured(), "PNG"), max_pixels=100) == "too_large"
    for not_an_image in (b"just some notes\n", b"%PDF-1.7\n", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40,
                         bytes(range(256)) * 4):
        assert kind_of(not_an_image) == "unsupported", not_an_image[:12]
    assert kind_of(jpeg[: len(jpeg) // 2]) == "corrupt"


@pytest.mark.parametrize("head, fmt", [(b"\xff\xd8\xff", "JPEG"), (b"GIF89a", "GIF"),
                                       (b"RIFF\x00\x00\x00\x00WEBP", "WEBP")])
def test_bytes_that_start_like_an_image_are_a_broken_image(head, fmt):
    # No decoder identifies them, but they are a cut-off photo, not "not an image".
    with pytest.raises(UnreadableImageError) as info:
        load_image(head)
    assert info.value.kind == "corrupt" and f"starts like a {fmt}" in info.value.reason


def test_missing_file_and_directory(tmp_path):
    assert "not found" in reason_of(tmp_path / "nope.jpg")
    assert "directory" in reason_of(tmp_path)


@pytest.mark.parametrize("side", [9000, 20000])
def test_huge_dimensions_rejected_before_decoding(side, decoder_calls):
    data = png_header_only(side, side)
    assert len(data) < 200
    reason = reason_of(data)
    assert "too many pixels" in reason
    assert decoder_calls == []  # refused from the header: no pixel was decoded
    # A small image made the same way goes on to the decoder (which finds its pixel data missing).
    assert "too many pixels" not in reason_of(png_header_only(100, 100))
    assert decoder_calls == ["zip"]


def test_pixel_limit_is_per_call_not_global():
    data = encode(textured((100, 100)), "PNG")
    assert "too many pixels" in reason_of(data, max_pixels=5000)
    assert load_image(data, max_pixels=10_000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS != 5000  # Pillow's process-global setting was not touched
    assert MAX_PIXELS >= 50_000_000  # a 48-50 MP phone photo must pass


def test_unsupported_plugin_formats_are_refused():
    # Pillow could open these, but they are not photos (and EPS would run Ghostscript).
    assert "EPS" not in SUPPORTED_FORMATS
    im = Image.new("RGB", (8, 8), (1, 2, 3))
    assert "not an image" in reason_of(encode(im, "TGA"))


def test_fuzzed_files_only_ever_raise_unreadable_image_error():
    rng = random.Random(0)
    originals = [encode(textured((48, 40), s), fmt) for s, fmt in enumerate(["JPEG", "PNG", "GIF", "WEBP"])]
    outcomes = {"ok": 0, "unreadable": 0}
    for _ in range(240):
        data = bytearray(rng.choice(originals))
        if rng.random() < 0.5:
            data = data[: rng.randrange(1, len(data))]
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            out = load_image(bytes(data))
            assert out.mode == "RGB"
            outcomes["ok"] += 1
        except UnreadableImageError as err:
            assert err.reason
            outcomes["unreadable"] += 1
    assert outcomes["unreadable"] > 0


def test_bad_target_size():
    with pytest.raises(ValueError):
        load_image(encode(textured(), "PNG"), target_size=0)


@pytest.mark.parametrize("threads", [False, True])
def test_decode_each_keeps_the_readable_in_order_and_says_why_the_rest_failed(tmp_path, caplog, threads):
    from concurrent.futures import ThreadPoolExecutor

    files = {"a.png": encode(textured(seed=1), "PNG"), "notes.jpg": b"just text\n", "b.jpg": encode(textured(seed=2), "JPEG"),
             "empty.png": b"", "c.png": encode(textured(seed=3), "PNG")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [tmp_path / name for name in files] + [tmp_path / "missing.png"]
    with ThreadPoolExecutor(2) as pool, caplog.at_level("WARNING"):
        out = decode_each(paths, lambda p: load_image(p, target_size=16), name=lambda p: p.name,
                          mapper=pool.map if threads else map)
    assert out.kept == [0, 2, 4]
    for i, im in zip(out.kept, out.images):  # each result belongs to its own file, whatever the mapper's order
        assert np.array_equal(np.asarray(im), np.asarray(load_image(paths[i], target_size=16)))
    assert {i: err.kind for i, err in out.failures.items()} == {1: "unsupported", 3: "empty", 5: "io"}
    assert "skipping unreadable image empty.png: empty file (0 bytes)" in caplog.text
    caplog.clear()
    quiet = decode_each(paths, load_image, what=None)  # a caller that reports failures itself
    assert sorted(quiet.failures) == [1, 3, 5] and caplog.text == ""
