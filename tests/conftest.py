"""Shared, data-generic test helpers.

``make_image_folder(root, classes={"a": 6, "b": 6}, size=(32, 32))`` writes a tiny class-folder
dataset that a small CNN can learn: each class has its own dominant colour and stripe direction,
and every image adds its own smooth random shading and pixel noise, so no two files are duplicates
or near-duplicates (the data checks find none) yet the classes stay easy to tell apart.
Use it directly (``from conftest import make_image_folder``) or through the ``image_folder``
fixture, which builds the default two-class folder under ``tmp_path``.

Shared fixtures: ``colour_model`` (the small red/green/blue network of serve_fixtures, trained once
per session; tests only read it), ``tiny_arch`` and ``halves`` (test architectures in the global
registry while a module runs, removed after), ``browser`` (Debian's Chromium through Playwright),
``face_model`` and the real data sets beside the repository. ``wait_until`` waits for an observed
condition (never a guessed delay).
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ATHLETES = SHARED / "datasets" / "athletes"
UNKNOWN_PEOPLE = SHARED / "datasets" / "unknown_people"  # LFW deep-funneled 250x250, one per person
LFW_PEOPLE12 = SHARED / "datasets" / "lfw_people12"  # 12 people, 39-60 LFW photos each

# Distinct, saturated class colours (RGB); classes beyond the list get a colour from the seed.
CLASS_COLOURS = [(220, 40, 40), (40, 90, 220), (40, 170, 60), (230, 200, 40), (150, 60, 190),
                 (30, 190, 200), (240, 130, 30), (120, 120, 120)]

_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


def synthetic_image(class_index: int, rng: np.random.Generator, size: tuple[int, int] = (32, 32)) -> Image.Image:
    """One RGB image of class ``class_index``: class colour, class stripes, own shading and noise."""
    w, h = size
    if class_index < len(CLASS_COLOURS):
        colour = np.array(CLASS_COLOURS[class_index], dtype=np.float64)
    else:
        colour = np.random.default_rng(class_index).integers(30, 230, 3).astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = np.pi * (class_index % 4) / 4  # stripe direction differs between classes
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / max(6.0, w / 5))
    # Smooth per-image shading: a random 4x4 field upsampled, so low frequencies differ per image.
    field = np.asarray(Image.fromarray(rng.uniform(-1, 1, (4, 4)).astype(np.float32))
                       .resize((w, h), Image.BICUBIC), dtype=np.float64)
    img = colour[None, None, :] + 30 * stripes[..., None] + 45 * field[..., None]
    img = img + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_image_folder(root: str | Path, classes: dict[str, int] | None = None,
                      size: tuple[int, int] = (32, 32), fmt: str = "JPEG", seed: int = 0) -> Path:
    """Write ``classes`` (name -> number of images) as ``root/<name>/<name>_<i>.<ext>``; return root."""
    classes = {"a": 6, "b": 6} if classes is None else classes
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            im = synthetic_image(k, rng, size)
            path = folder / f"{name}_{i:03d}{_EXT.get(fmt, '.' + fmt.lower())}"
            if fmt == "JPEG":
                im.save(path, fmt, quality=92)
            else:
                im.save(path, fmt)
    return root


def photo_like(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A textured RGB picture (random shapes on a smooth background, fine noise) with enough
    detail for keypoint matching: the stand-in for a real photo in near-duplicate tests."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.fromarray(rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)).resize(
        size, Image.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        bw, bh = (int(v) for v in rng.integers(8, 70, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.integers(0, 2) else draw.rectangle
        shape((x0, y0, x0 + bw, y0 + bh), fill=colour)
    arr = np.asarray(im, dtype=np.float64) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """The default two-class synthetic folder (6 + 6 images of 32x32)."""
    return make_image_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def athletes_dir() -> Path:
    """The real dataset beside the repository; tests using it skip when it is absent."""
    if not ATHLETES.is_dir():
        pytest.skip(f"real dataset not found at {ATHLETES}")
    return ATHLETES


@pytest.fixture(scope="session")
def lfw_people12_dir() -> Path:
    """12 people, 39 to 60 face-centred news photos each; tests using it skip when it is absent."""
    if not LFW_PEOPLE12.is_dir():
        pytest.skip(f"real dataset not found at {LFW_PEOPLE12}")
    return LFW_PEOPLE12


def copy_people(source: Path, dest: Path, people: dict[str, range], *, flat: bool = False) -> dict[str, str]:
    """Copy photos ``people[name]`` (indices in name order) of each person's folder of ``source``
    into ``dest/<name>/`` (``flat``: into ``dest`` itself, as an unlabelled folder); returns
    {path relative to ``dest``: person}."""
    truth = {}
    for name, which in people.items():
        files = sorted(p for p in (source / name).iterdir() if p.is_file())
        for k in which:
            rel = files[k].name if flat else f"{name}/{files[k].name}"
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(files[k].read_bytes())
            truth[rel] = name
    return truth


@pytest.fixture(scope="session")
def unknown_people_dir() -> Path:
    """150 aligned face photos of different people; tests using it skip when it is absent."""
    if not UNKNOWN_PEOPLE.is_dir():
        pytest.skip(f"real dataset not found at {UNKNOWN_PEOPLE}")
    return UNKNOWN_PEOPLE


#: Debian's Chromium, when installed (the report rendering tests skip without it).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rendered_ink(html_path: Path, shot: Path, window: str) -> float:
    """Open a report in headless Chromium, screenshot it and return the share of dark pixels: a
    rendered page has content, a blank or broken one does not."""
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", f"--screenshot={shot}", f"--window-size={window}",
                    Path(html_path).as_uri()], check=True, capture_output=True, timeout=120)
    with Image.open(shot) as im:
        return float((np.asarray(im.convert("L")) < 200).mean())


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run where PyTorch sees a GPU and are skipped, with the reason, elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    reason = ("no CUDA GPU: torch.cuda.is_available() is False "
              f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none: a CPU-only build'})")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


#: torchvision's ImageNet MobileNetV2 file beside the repository (the face model's no-face fallback).
MOBILENET = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
#: Photos per athlete in the session's small face model, and its quick recipe.
FACE_MODEL_PER_CLASS = 20
FACE_MODEL_RECIPE = {"phases.frozen.epochs": "2", "feature_views": "1"}


@pytest.fixture(scope="session")
def face_model(athletes_dir, tmp_path_factory) -> dict:
    """A small ``face_embedding`` model trained once per session the way ``image-classifier train``
    trains one (calibrated, with its "none of these" rule, bank labels and validation strangers in
    the card), on the first 20 photos (by name) of each athlete, linked into a folder of their own.
    Returns {"data", "model", "cache" (the face cache root it filled), "split" (the model's split.csv)}."""
    if not MOBILENET.is_file():
        pytest.skip(f"needs {MOBILENET}")
    import image_classifier as ic

    root = tmp_path_factory.mktemp("face_model")
    data = root / "data"
    for cls in ("Kobe Bryant", "Maria Sharapova", "ronaldo"):
        (data / cls).mkdir(parents=True)
        for src in sorted((athletes_dir / cls).iterdir())[:FACE_MODEL_PER_CLASS]:
            (data / cls / src.name).symlink_to(src)
    ic.train(data, arch="face_embedding", out=root / "model", weights=MOBILENET, set=FACE_MODEL_RECIPE,
             cache_dir=root / "cache", progress=False, val=0.25, test=0.25)
    return {"data": data, "model": root / "model", "cache": root / "cache", "split": root / "model" / "split.csv"}


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds. The timeout only stops a
    test that would hang: it is never what the test measures."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true after {timeout:g} s")
        time.sleep(0.005)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory) -> Path:
    """The small network that tells red, green and blue apart (``serve_fixtures.train_colour_model``,
    classes ``serve_fixtures.CLASSES``), trained once per session. Tests read it and never change it
    (a test that needs a changed one copies it): the session fails if its files changed."""
    from serve_fixtures import train_colour_model

    model = train_colour_model(tmp_path_factory.mktemp("colour_model") / "colours")
    before = _tree_digest(model)
    yield model
    assert _tree_digest(model) == before, f"a test changed the shared colour model in {model}: copy it instead"


@pytest.fixture(scope="module")
def tiny_arch() -> str:
    """train_helpers' tiny CNN in the global architecture registry while a module's tests run,
    removed afterwards (other modules parametrize over ``list_archs()``)."""
    import train_helpers
    from image_classifier.models.registry import unregister_arch

    name = train_helpers.register_tiny()
    yield name
    unregister_arch(name)


@pytest.fixture(scope="module")
def compare_archs() -> tuple[str, str]:
    """compare_child's two architectures (the tiny CNN and its two-phase twin) in the registry while
    a module's tests run, removed afterwards: registered at import, another module's teardown could
    remove them before this module runs."""
    import compare_child
    from image_classifier.models.registry import unregister_arch

    names = compare_child.register()
    yield names
    for name in names:
        unregister_arch(name)


@pytest.fixture(scope="module")
def halves() -> tuple[str, str]:
    """ensemble_helpers' two half-picture architectures, registered while a module's tests run."""
    from ensemble_helpers import ARCHS, register_halves
    from image_classifier.models.registry import unregister_arch

    register_halves()
    yield ARCHS
    for name in ARCHS:
        unregister_arch(name)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (skips without it, fails under CI)."""
    from browser_helpers import CHROMIUM_ARGS, chromium

    exe = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def decoder_calls(monkeypatch) -> list[str]:
    """The names of the pixel decoders Pillow creates while the test runs (``Image._getdecoder``,
    which every decode of pixel data goes through, wrapped so that it still decodes): an image
    refused from its header leaves the list empty."""
    from PIL import Image as PILImage

    calls: list[str] = []
    real = PILImage._getdecoder

    def counting(mode, decoder_name, args, extra=()):
        calls.append(decoder_name)
        return real(mode, decoder_name, args, extra)

    monkeypatch.setattr(PILImage, "_getdecoder", counting)
    return calls
