"""The README's two screenshots, rendered from a real run by Debian's Chromium (Playwright).

    .venv/bin/python scripts/screenshots.py RUN_DIR [--out docs]

* ``docs/screenshot-report.png``: the top of ``RUN_DIR/report.html`` (what the run found, the
  comparison table), as a browser shows it.
* ``docs/screenshot-page.png``: ``serve RUN_DIR`` in the browser after a group photo was dropped on
  it: a collage of four of the run's test photos (one face each) and a stranger from
  ``../shared/datasets/unknown_people``, a box and a name on each face.

The photos are of real people that may not be redistributed (``../shared/datasets/README.md``), so
every photo in the two pictures is blurred before it is saved; text, tables, plots and the boxes and
names drawn over the faces stay sharp.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "tests"))

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-dev-shm-usage"]
WIDTH, HEIGHT = 1200, 900


def blur_regions(shot: Path, boxes: list[dict]) -> None:
    """Blur each ``{x, y, width, height}`` region (CSS pixels = image pixels at scale 1) of ``shot``."""
    with Image.open(shot) as im:
        im = im.convert("RGB")
        for b in boxes:
            region = (int(b["x"]), int(b["y"]), int(b["x"] + b["width"]), int(b["y"] + b["height"]))
            region = (max(0, region[0]), max(0, region[1]), min(im.width, region[2]), min(im.height, region[3]))
            if region[2] > region[0] and region[3] > region[1]:
                im.paste(im.crop(region).filter(ImageFilter.GaussianBlur(12)), region[:2])
        im.save(shot, optimize=True)


def photo_boxes(page, selector: str) -> list[dict]:
    """Bounding boxes of the visible photos matching ``selector`` (plots and icons left out)."""
    boxes = []
    for element in page.locator(selector).all():
        box = element.bounding_box()
        if box and box["width"] > 24 and box["height"] > 24 and box["y"] < HEIGHT:
            boxes.append(box)
    return boxes


def report_shot(browser, run: Path, out: Path) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    page.goto((run / "report.html").as_uri())
    page.wait_for_load_state("load")
    shot = out / "screenshot-report.png"
    page.screenshot(path=str(shot))
    # Photos in the report are <img> elements of galleries; plots are too, and stay sharp: blur only
    # images inside figures captioned with a file name (the galleries) or in tables of examples.
    blur_regions(shot, photo_boxes(page, "figure.photo img, .gallery img, img.photo"))
    page.close()


def page_shot(browser, run: Path, out: Path) -> None:
    from face_helpers import face_collage

    from image_classifier.faces import analyse_bytes
    from image_classifier.serve import ModelStore, create_app
    from image_classifier.serve.server import BackgroundServer

    data = Path(json.loads((run / "metrics.json").read_text())["data"]["root"])  # what compare read
    with open(run / "split.csv", newline="") as fh:
        test = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    picked: list[Path] = []
    seen: dict[str, int] = {}
    for r in test:
        path = data / r["rel_path"]
        faces = analyse_bytes(path.read_bytes()).faces
        if len(faces) == 1 and faces[0].method == "hog" and seen.get(r["class"], 0) < 2 and len(picked) < 4:
            picked.append(path)
            seen[r["class"]] = seen.get(r["class"], 0) + 1
    stranger = sorted((SHARED / "datasets" / "unknown_people").iterdir())[0]
    with tempfile.TemporaryDirectory() as tmp:
        group = Path(tmp) / "group-photo.jpg"
        face_collage([*picked, stranger], group)
        store = ModelStore.from_paths([run]).load()
        try:
            with BackgroundServer(create_app(store), max_upload_bytes=10 * 1024 * 1024) as srv:
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                page.goto(srv.url + "/?lang=en")
                page.wait_for_selector("body[data-ready=true]", timeout=60_000)
                if page.locator("#model-select").is_visible():
                    page.select_option("#model-select", "face_embedding")
                page.set_input_files("#file-input", str(group))
                page.wait_for_selector("#result:not([hidden])", timeout=120_000)
                page.wait_for_timeout(300)  # the preview image's decode: a screenshot, not a test
                shot = out / "screenshot-page.png"
                page.screenshot(path=str(shot))
                blur_regions(shot, photo_boxes(page, "#preview"))
                # The boxes and names are drawn over the photo: redraw them sharp over the blur.
                page.evaluate("() => { document.getElementById('preview').style.visibility = 'hidden'; }")
                sharp = Path(tmp) / "sharp.png"
                page.screenshot(path=str(sharp))
                _overlay_tags(shot, sharp, photo_boxes(page, "#preview-box"))
                page.close()
        finally:
            store.close()


def _overlay_tags(shot: Path, sharp: Path, boxes: list[dict]) -> None:
    """Paste, inside the photo's area, the pixels of ``sharp`` (the page with the photo hidden: only
    the face boxes and names) that differ from its background, over the blurred ``shot``."""
    with Image.open(shot) as base, Image.open(sharp) as top:
        base, top = base.convert("RGB"), top.convert("RGB")
        for b in boxes:
            region = (int(b["x"]), int(b["y"]), int(b["x"] + b["width"]), int(b["y"] + b["height"]))
            tags = top.crop(region)
            background = tags.getpixel((1, 1))
            mask = Image.eval(tags.convert("L"), lambda v: 0).convert("L")
            px, mk = tags.load(), mask.load()
            for y in range(tags.height):
                for x in range(tags.width):
                    if sum(abs(a - c) for a, c in zip(px[x, y], background)) > 30:
                        mk[x, y] = 255
            base.paste(tags, region[:2], mask)
        base.save(shot, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        report_shot(browser, args.run, args.out)
        page_shot(browser, args.run, args.out)
        browser.close()
    print(f"wrote {args.out / 'screenshot-report.png'} and {args.out / 'screenshot-page.png'}")


if __name__ == "__main__":
    main()
