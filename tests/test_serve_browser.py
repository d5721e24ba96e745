"""The web page in a real browser: Debian's Chromium driven by Playwright against the real server
(waitress on localhost), with a real model.

With ../shared present the model is a MobileNetV2 trained here (frozen ImageNet backbone, a few
epochs) on the athletes data, and the uploaded photo is one of the split's *test* photos, never
seen in training. Without it, a small network trained on synthetic colour images stands in.

Chromium comes from the system (`apt-get install chromium`, done by scripts/test.sh), never from a
test tool's download. The tests skip when it is missing, except under CI (CI=true), where they fail.
Screenshots are written to test-artifacts/ at the repository root.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import re
import urllib.request
from pathlib import Path

import pytest

from browser_helpers import ARTIFACTS, MAX_UPLOAD, PageWatch, expect
from serve_fixtures import COLOURS, HTML_CLASS, colour_image, encode, make_run

from image_classifier.i18n import catalog, translator
from image_classifier.serve import ModelStore, create_app
from image_classifier.serve.server import BackgroundServer

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ATHLETES = SHARED / "datasets" / "athletes"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2-b0353104.pth"


@dataclasses.dataclass
class AthleteCase:
    model_dir: Path
    photos: list[tuple[Path, str]]  # held-out photos with their true class, in a fixed order
    real_data: bool


@pytest.fixture(scope="module")
def athlete_case(tmp_path_factory, request) -> AthleteCase:
    tmp = tmp_path_factory.mktemp("browser")
    if not (ATHLETES.is_dir() and MOBILENET_WEIGHTS.is_file()):
        # Stand-in: a small network that really learned colours, and a synthetic "photo" file.
        model = request.getfixturevalue("colour_model")
        photos = []
        for name in ("green", "blue"):
            path = tmp / f"{name}-photo.jpg"
            colour_image(COLOURS[name], size=(612, 408), seed=42).save(path, "JPEG", quality=90)
            photos.append((path, name))
        return AthleteCase(model, photos, real_data=False)

    from image_classifier.data.split import make_split
    from image_classifier.models.registry import get_arch
    from image_classifier.training import train_model

    split = make_split(ATHLETES, seed=0)
    recipe = get_arch("mobilenet_v2").default_recipe()
    # The frozen phase only, a few epochs, one feature view: ~0.85 test accuracy in well under a minute.
    recipe.phases = [dataclasses.replace(recipe.phases[0], epochs=6)]
    result = train_model(split, "mobilenet_v2", tmp / "mobilenet_v2", weights=MOBILENET_WEIGHTS, recipe=recipe,
                         set={"feature_views": 1}, seed=0, progress=False)
    test = sorted(split.subset("test"), key=lambda r: (r.class_name, r.rel_path))
    photos = []
    for cls in split.classes:  # the first three test photos of each class, by file name
        photos += [(Path(r.path), r.class_name) for r in test if r.class_name == cls][:3]
    return AthleteCase(result.model_dir, photos, real_data=True)


def _post_file(url: str, path: Path) -> dict:
    req = urllib.request.Request(url + "/api/predict", data=path.read_bytes(),
                                 headers={"Content-Type": "application/octet-stream"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_athlete_photo_gets_its_true_label_on_the_page(browser, athlete_case):
    ARTIFACTS.mkdir(exist_ok=True)
    store = ModelStore.from_paths([athlete_case.model_dir]).load()
    with BackgroundServer(create_app(store), max_upload_bytes=MAX_UPLOAD) as srv:
        # The API's answers for the held-out photos; the model must be a real one.
        answers = [(path, truth, _post_file(srv.url, path)) for path, truth in athlete_case.photos]
        right = [(path, truth, a) for path, truth, a in answers if a["label"] == truth]
        assert len(right) >= (len(answers) * 2 + 2) // 3, [(p.name, t, a["label"]) for p, t, a in answers]
        path, truth, api = right[0]

        watch = PageWatch(browser, srv.url)
        watch.upload(str(path))
        watch.wait_result()
        page = watch.page
        shown = page.inner_text("#result-label")
        assert shown == truth == api["label"]
        assert page.inner_text("#result-probability") == f"{100 * api['probabilities'][truth]:.1f} %"
        bars = page.locator("#bars li")
        assert bars.count() == len(store.get().classes)
        assert page.inner_text("#bars li.top .bar-name") == truth
        assert page.get_attribute("#preview", "src").startswith("blob:")
        assert page.inner_text("#info-arch") == store.get().entry.card.architecture
        assert page.inner_text("#info-accuracy") == "not evaluated"  # a lone model: no run metrics
        assert "ms" in page.inner_text("#result-meta")
        # the latency of this very request is now in the model's running median
        expect(page.locator("#info-latency")).to_contain_text("median")
        page.screenshot(path=str(ARTIFACTS / "serve-browser-desktop.png"), full_page=True)
        watch.check_clean()
        watch.close()

        # Phone width: same answer, nothing wider than the screen.
        phone = PageWatch(browser, srv.url, width=390, height=844)
        phone.upload(str(path))
        phone.wait_result()
        assert phone.page.inner_text("#result-label") == truth
        assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390
        phone.page.screenshot(path=str(ARTIFACTS / "serve-browser-phone.png"), full_page=True)
        phone.check_clean()
        phone.close()
    store.close()
    note = "real athletes data" if athlete_case.real_data else "synthetic stand-in (../shared absent)"
    (ARTIFACTS / "serve-browser.txt").write_text(
        f"{note}: uploaded {path.name} (true class {truth!r}); page showed {shown!r} "
        f"at {100 * api['probabilities'][truth]:.1f} %\n")


@pytest.fixture(scope="module")
def colour_server(tmp_path_factory, colour_model):
    """A run with two models whose classes include one named with HTML."""
    tmp = tmp_path_factory.mktemp("colour-run")
    run = make_run(tmp / "runs" / "demo", colour_model)
    store = ModelStore.from_paths([run]).load()
    with BackgroundServer(create_app(store), max_upload_bytes=MAX_UPLOAD) as srv:
        yield srv
    store.close()


def test_html_class_names_are_text_and_the_model_can_be_chosen(browser, colour_server):
    watch = PageWatch(browser, colour_server.url)
    page = watch.page
    # Several models: a selector, the run's best chosen, its test accuracy shown.
    assert page.is_visible("#model-select")
    assert page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)") == ["tiny_a", "tiny_b"]
    assert page.input_value("#model-select") == "tiny_b"
    assert page.inner_text("#info-accuracy").startswith("90.0 %")
    assert HTML_CLASS in page.inner_text("#info-classes")

    watch.upload({"name": "red.png", "mimeType": "image/png",
                  "buffer": encode(colour_image(COLOURS[HTML_CLASS], seed=3), "PNG")})
    watch.wait_result()
    assert page.inner_text("#result-label") == HTML_CLASS  # shown literally, as text
    assert page.evaluate("window.__pwned") is None  # the onerror in the class name never ran
    assert page.locator("#result img, #bars b, #model-panel img").count() == 0
    assert "tiny_b" in page.inner_text("#result-meta")

    # Choosing the other model classifies the same photo again with it.
    page.select_option("#model-select", "tiny_a")
    expect(page.locator("#result-meta")).to_contain_text("tiny_a ·")
    assert page.inner_text("#result-label") == HTML_CLASS
    assert page.inner_text("#info-accuracy") == "not evaluated"
    watch.check_clean()
    watch.close()


def test_non_image_and_broken_image_get_a_clear_message(browser, colour_server):
    watch = PageWatch(browser, colour_server.url)
    page = watch.page
    watch.upload({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"shopping list: eggs, milk\n"})
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == "Not an image: the file holds text."
    assert page.is_hidden("#result")

    jpeg = encode(colour_image(COLOURS["green"], size=(300, 200), seed=4))
    watch.upload({"name": "cut.jpg", "mimeType": "image/jpeg", "buffer": jpeg[: len(jpeg) // 2]})
    expect(page.locator("#error")).to_contain_text("This image could not be read")
    assert page.is_hidden("#result")

    # A good photo afterwards clears the message.
    watch.upload({"name": "ok.jpg", "mimeType": "image/jpeg", "buffer": jpeg})
    watch.wait_result()
    assert page.is_hidden("#error") and page.inner_text("#result-label") == "green"
    watch.check_clean(expected_http_errors=2)  # the 415 and the 400, reported by the browser
    watch.close()


def test_drag_and_drop_and_paste(browser, colour_server):
    watch = PageWatch(browser, colour_server.url)
    page = watch.page
    make_transfer = """([b64, name, type]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, { type }));
        return dt;
    }"""
    blue = base64.b64encode(encode(colour_image(COLOURS["blue"], seed=11))).decode()
    transfer = page.evaluate_handle(make_transfer, [blue, "dropped.jpg", "image/jpeg"])
    page.dispatch_event("#drop-zone", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    watch.wait_result()
    assert page.inner_text("#result-label") == "blue"
    assert "dropped.jpg" in page.inner_text("#preview-name")

    green = base64.b64encode(encode(colour_image(COLOURS["green"], seed=12), "PNG")).decode()
    page.evaluate("""([b64, make]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "image.png", { type: "image/png" }));
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true }));
    }""", [green, None])
    expect(page.locator("#result-label")).to_have_text("green")
    assert "image.png" in page.inner_text("#preview-name")
    watch.check_clean()
    watch.close()


@pytest.fixture(scope="module")
def face_model(tmp_path_factory) -> Path:
    """A face_embedding model trained here on 12 photos of each athlete (a few seconds of fallback)."""
    if not (ATHLETES.is_dir() and MOBILENET_WEIGHTS.is_file()):
        pytest.skip("needs ../shared (athletes photos and MobileNetV2 weights)")
    from image_classifier.data.split import make_split
    from image_classifier.training import train_model

    tmp = tmp_path_factory.mktemp("face-browser")
    for cls in ("Kobe Bryant", "Maria Sharapova", "ronaldo"):
        (tmp / "data" / cls).mkdir(parents=True)
        for src in sorted((ATHLETES / cls).iterdir())[:12]:
            (tmp / "data" / cls / src.name).write_bytes(src.read_bytes())
    split = make_split(tmp / "data", seed=0, val=0.25, test=0.25)
    return train_model(split, "face_embedding", tmp / "model", weights=MOBILENET_WEIGHTS, progress=False,
                       set={"phases.frozen.epochs": "2", "feature_views": "1"}).model_dir


def test_the_deciding_face_is_boxed_on_the_photo(browser, face_model, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    photo = ATHLETES / "Kobe Bryant" / "kobe_(103).jpg"  # one frontal face
    store = ModelStore.from_paths([face_model]).load()
    with BackgroundServer(create_app(store), max_upload_bytes=MAX_UPLOAD) as srv:
        api = _post_file(srv.url, photo)
        assert api["face"] is not None
        watch = PageWatch(browser, srv.url)
        watch.upload(str(photo))
        watch.wait_result()
        page = watch.page
        box = page.locator("#face-box")
        expect(box).to_be_visible()
        img = page.locator("#preview").bounding_box()
        drawn = box.bounding_box()
        w, h = api["image_size"]
        x0, y0, x1, y1 = api["face"]
        # Where the API's box lands on the photo as displayed (border included, so within 4 px).
        assert drawn["x"] == pytest.approx(img["x"] + x0 * img["width"] / w, abs=4)
        assert drawn["y"] == pytest.approx(img["y"] + y0 * img["height"] / h, abs=4)
        assert drawn["width"] == pytest.approx((x1 - x0) * img["width"] / w, abs=4)
        assert drawn["height"] == pytest.approx((y1 - y0) * img["height"] / h, abs=4)
        assert "decided by the face in the box" in page.inner_text("#result-meta")
        page.screenshot(path=str(ARTIFACTS / "serve-browser-face.png"), full_page=True)
        # A photo without a face: no box, and the page says the whole photo decided.
        noface = tmp_path / "texture.png"
        colour_image((90, 140, 60), size=(400, 300), seed=5).save(noface)
        watch.upload(str(noface))
        expect(page.locator("#result-meta")).to_contain_text("no face found")
        expect(box).to_be_hidden()
        watch.check_clean()
        watch.close()
    store.close()


# ---- the page in each of the study's languages ---------------------------------------------------

def _fixed_parts(lang: str) -> set[str]:
    """The words of the page's messages in ``lang`` that the other language does not share: the
    text between placeholders, long enough not to be a unit or a name ("Drop a photo to see...",
    " in the server (")."""
    own, other = catalog(lang), catalog("es" if lang == "en" else "en")
    parts = set()
    for key, message in own.items():
        if key.startswith("page.") and message != other[key]:
            parts.update(p.strip(" ,.:;·()") for p in re.split(r"\{\w+\}", message))
    return {p for p in parts if len(p) >= 6}


@pytest.mark.parametrize("locale, lang", [("en-US", "en"), ("es-ES", "es")])
def test_the_page_and_its_result_are_in_the_browsers_language(browser, athlete_case, locale, lang):
    """A browser set to English or Spanish (its Accept-Language) gets every heading, label and
    result sentence in that language, numbers written its way, and the class names as they are."""
    t = translator(lang)
    store = ModelStore.from_paths([athlete_case.model_dir]).load()
    with BackgroundServer(create_app(store), max_upload_bytes=MAX_UPLOAD) as srv:
        path, truth = athlete_case.photos[0]
        api = _post_file(srv.url, path)
        watch = PageWatch(browser, srv.url, locale=locale)
        page = watch.page
        assert page.get_attribute("html", "lang") == lang
        assert page.inner_text("#status") == t("page.status.ready")
        assert page.inner_text(".tagline") == t("page.tagline")
        assert page.locator(".facts dt").all_text_contents() == [  # (shown upper-case by the CSS)
            t("page.fact.architecture"), t("page.fact.accuracy"), t("page.fact.latency"), t("page.fact.classes")]
        assert page.inner_text("#limit-hint") == t("page.drop.formats_limit", size=t("page.mb", value="10"))
        assert page.inner_text("#info-accuracy") == t("page.accuracy.none")  # a lone model: no run metrics
        assert page.inner_text("#info-classes") == ", ".join(store.get().classes)  # never translated

        watch.upload(str(path))
        watch.wait_result()
        # The headings of the three sections (for screen readers) and the result.
        assert [page.text_content(h) for h in ("#model-heading", "#upload-heading", "#result-heading")] == [
            t("page.heading.model"), t("page.heading.photo"), t("page.heading.result")]
        assert page.inner_text("#result-label") == api["label"]  # the class name, untranslated
        assert page.inner_text("#result-probability") == t(
            "page.percent", value=t.localize_number(f"{100 * api['probabilities'][api['label']]:.1f}"))
        meta = page.inner_text("#result-meta")
        assert meta.startswith(f"{api['model']} · ")
        server_part = t("page.meta.server", ms="MS", details="DETAILS").split("MS")[1].split("DETAILS")[0]
        assert server_part in meta, meta  # " in the server (" / " en el servidor ("
        assert meta.endswith(t("page.meta.round_trip", ms="X").split("X")[1]), meta
        assert page.locator("#bars .bar-name").all_inner_texts()[0] == api["label"]
        expect(page.locator("#info-latency")).to_contain_text(
            t("page.latency.median", ms="MS", n=1).split("MS")[1].split("(")[0].strip())
        if lang == "es":
            assert re.fullmatch(r"\d+,\d %", page.inner_text("#result-probability"))
        # Nothing on the page, hidden headings included, is in the other language.
        text = page.text_content("body")
        leftovers = [p for p in _fixed_parts("es" if lang == "en" else "en")
                     if re.search(rf"(?<!\w){re.escape(p)}(?!\w)", text)]  # whole words: "Result" is in "Resultado"
        assert not leftovers, leftovers
        page.screenshot(path=str(ARTIFACTS / f"serve-browser-{lang}.png"), full_page=True)
        watch.check_clean()
        watch.close()
    store.close()


def test_spanish_by_query_with_a_run_an_error_and_the_model_choice(browser, colour_server):
    """?lang=es in an English browser: the run's test accuracy with decimal commas, the best
    model marked in Spanish, a refused file explained in Spanish (quoting the server)."""
    watch = PageWatch(browser, colour_server.url, locale="en-US", path="/?lang=es")
    page = watch.page
    assert page.get_attribute("html", "lang") == "es"
    assert page.inner_text("#info-accuracy") == (
        "90,0 % (IC 95 % 80,0 % – 97,0 %) en 30 imágenes reservadas para la prueba")
    assert page.eval_on_selector_all("#model-select option", "os => os.map(o => o.textContent)") == [
        "tiny_a", "tiny_b (el mejor)"]
    watch.upload({"name": "notas.txt", "mimeType": "text/plain", "buffer": b"lista de la compra: huevos\n"})
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == "No es una imagen (Not an image: the file holds text.)"
    watch.upload({"name": "rojo.png", "mimeType": "image/png",
                  "buffer": encode(colour_image(COLOURS[HTML_CLASS], seed=3), "PNG")})
    watch.wait_result()
    assert page.inner_text("#result-label") == HTML_CLASS
    assert " en el servidor (decodificación " in page.inner_text("#result-meta")
    assert page.is_hidden("#error")
    # The link back to English keeps the page usable in the other language.
    page.click("nav.languages a[hreflang=en]")
    page.wait_for_selector("body[data-ready=true]")
    assert page.get_attribute("html", "lang") == "en" and page.inner_text("#status") == "Ready."
    watch.check_clean(expected_http_errors=1)  # the 415, reported by the browser
    watch.close()
