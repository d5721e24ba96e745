"""The study's languages: negotiation, the catalogs, the translator, and the served page in
English and Spanish over Flask's test client and over real HTTP from ``image-classifier serve``.

(The page in a real browser, per language, is in test_serve_browser.py.)
"""
from __future__ import annotations

import html
import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from serve_fixtures import COLOURS, HTML_CLASS, colour_image, encode, make_run

from image_classifier import i18n
from image_classifier.i18n import negotiate, placeholders, translator
from image_classifier.serve import ModelStore, create_app

STATIC = Path(i18n.__file__).parent / "serve" / "static"

# Messages that are rightly the same in both languages: units, names of products and backends,
# technical abbreviations, pure punctuation. Any other message equal in both is untranslated.
SAME_IN_BOTH = {
    "page.percent", "page.ms", "page.mb", "page.preview.name", "page.footer.api",
    "report.format.speedup", "report.nav.backends", "report.narrative.headline.single",
    "report.choice.sentence", "report.choice.compare.item",
    "report.narrative.uncertainty.single_model", "report.table.log_loss", "report.table.ece", "report.table.gflops",
    "report.table.latency", "report.table.throughput", "report.table.f1", "report.table.total",
    "report.backends.table.backend", "report.backends.table.latency", "report.backends.table.throughput",
    "report.backends.name.torch", "report.backends.name.torch-bf16", "report.backends.name.onnx",
    "report.backends.name.onnx-int8", "report.faces.method", "report.html.model.log_loss",
    "report.html.model.ece", "report.html.split.sha256", "report.data.duplicates.where", "report.timing.item",
    "report.timing.separator", "report.plot.summary.label", "report.plot.reliability.legend",
}
# The ensemble's (issue 19): a loanword in the nav, and a name with its weight.
SAME_IN_BOTH |= {"report.nav.ensemble", "report.ensemble.mix_item"}


# ---- negotiation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    ("es-ES,es;q=0.9,en;q=0.8", "es"),          # a Spanish browser
    ("en-US,en;q=0.9,es;q=0.8", "en"),
    ("en;q=0.5, es;q=0.9", "es"),                # q decides, not the order
    ("es;q=0.8, en;q=0.8", "es"),                # equal q: the client's order
    ("en;q=0.8, es;q=0.8", "en"),
    ("fr-FR,fr;q=0.9,es;q=0.5,en;q=0.4", "es"),  # the best supported one, below unsupported ones
    ("es-MX", "es"),                             # a regional range reaches its language
    ("ES-ar;q=0.7", "es"),                       # case does not matter
    ("zh-Hant-TW, es", "es"),
    ("fr-FR,fr;q=0.9", "en"),                    # nothing supported: the default
    ("*", "en"),
    ("es;q=0, *", "en"),                         # refused, even through the wildcard
    ("en;q=0, *;q=0.5", "es"),
    ("es;q=0, es-MX", "en"),                     # es refused: es-MX cannot bring it back
    ("es;q=2, en;q=0.5", "en"),                  # a q above 1 is malformed: that entry is ignored
    ("es;q=0.12345, en;q=0.5", "en"),            # more than three decimals: malformed too
    ("es;q=high, en", "en"),
    ("!!!, es", "es"),                           # a malformed range does not spoil the rest
    ("", "en"),
    (None, "en"),
])
def test_accept_language_follows_rfc_9110_q_values(header, expected):
    assert negotiate(None, header, "en") == expected


def test_the_default_answers_when_the_header_names_no_supported_language():
    assert negotiate(None, "fr, de;q=0.5", "es") == "es"
    assert negotiate(None, None, "es") == "es"
    assert negotiate(None, "*", "es") == "es"
    assert negotiate(None, "en-GB", "es") == "en"  # the header still wins over the default


def test_the_query_beats_the_header_and_an_unsupported_query_is_ignored():
    assert negotiate("es", "en-US,en;q=0.9", "en") == "es"
    assert negotiate("ES-mx", "en", "en") == "es"
    assert negotiate("en", "es", "es") == "en"
    assert negotiate("fr", "es;q=0.9", "en") == "es"  # ?lang=fr: on to Accept-Language
    assert negotiate("", None, "es") == "es"


def test_an_unsupported_default_is_refused():
    with pytest.raises(ValueError, match="fr"):
        negotiate(None, None, "fr")
    with pytest.raises(ValueError, match="fr"):
        translator("fr")


def test_parse_accept_language_keeps_order_and_drops_malformed_entries():
    assert i18n.parse_accept_language("es-ES, es;q=0.9 , en;Q=0.8, x_y, fr;q=1.5") == [
        ("es-es", 1.0), ("es", 0.9), ("en", 0.8)]


# ---- catalogs ------------------------------------------------------------------------------------

def test_both_catalogs_have_the_same_keys_and_placeholders():
    en, es = i18n.catalog("en"), i18n.catalog("es")
    assert set(en) == set(es), sorted(set(en) ^ set(es))
    wrong = {k: (sorted(placeholders(en[k])), sorted(placeholders(es[k])))
             for k in en if placeholders(en[k]) != placeholders(es[k])}
    assert not wrong, wrong
    assert all(v.strip() for v in es.values()) and all(v.strip() for v in en.values())


def test_every_plural_has_both_forms():
    for lang in i18n.SUPPORTED:
        keys = set(i18n.catalog(lang))
        stems = {k.rsplit(".", 1)[0] for k in keys if k.endswith((".one", ".other"))}
        missing = [s for s in stems if not {f"{s}.one", f"{s}.other"} <= keys]
        assert not missing, (lang, missing)


def test_the_spanish_catalog_is_translated():
    en, es = i18n.catalog("en"), i18n.catalog("es")
    same = {k for k in en if en[k] == es[k]}
    assert same == SAME_IN_BOTH, sorted(same ^ SAME_IN_BOTH)


def test_report_keys_follow_the_naming_scheme():
    for key in i18n.catalog("en"):
        assert re.fullmatch(r"(page|report|format)\.[a-z0-9_-]+(\.[a-z0-9_ -]+)*", key), key
    assert sum(k.startswith("report.") for k in i18n.catalog("en")) > 200


def test_only_plain_named_placeholders_are_allowed():
    assert placeholders("{a} of {b}, {a}") == {"a", "b"}
    for bad in ("{x:.1f}", "{0}", "{}", "{a.b}", "{a!r}", "{a[0]}"):
        with pytest.raises(ValueError):
            placeholders(bad)


# ---- the translator ------------------------------------------------------------------------------

def test_class_names_pass_through_untouched():
    es = translator("es")
    for name in (HTML_CLASS, "{name}", "page.status.ready", "Kobe Bryant", "ronaldo", "niño {count} %"):
        assert es("page.model.best", name=name) == f"{name} (el mejor)"
        assert es("report.narrative.pair.noise", a=name, b="b", detail="d") == (
            f"{name} frente a b: la diferencia es ruido (d).")
    assert translator("en")("page.model.best", name="{name}") == "{name} (best)"


def test_numbers_are_written_the_way_each_language_writes_them():
    en, es = translator("en"), translator("es")
    assert es.percent(0.97, 1) == "97,0 %"
    assert en.percent(0.97, 1) == "97.0%"  # the English report's way, unchanged
    assert es.number(0.91349, 3) == "0,913" and en.number(0.91349, 3) == "0.913"
    assert es.number(None, 3) == "–" and es.percent(None, 1) == "–"
    assert es.localize_number("1.23 M") == "1,23 M"
    assert es("report.format.interval", low=es.number(0.85, 2), high=es.number(0.96, 2)) == "[0,85; 0,96]"


def test_plural_picks_the_form_by_count():
    en, es = translator("en"), translator("es")
    assert en.plural("report.narrative.summary.rest", 1) == (
        "; the other 1 is within what chance alone produces on a test set this small")
    assert en.plural("report.narrative.summary.rest", 2).startswith("; the other 2 are within")
    assert es.plural("report.narrative.summary.rest", 0).startswith("; las 0 restantes están")
    assert es.plural("report.narrative.summary.some", 1, total=3, alpha="0,05") == (
        "1 de 3 diferencias de exactitud entre pares es significativa con p < 0,05")


def test_html_escapes_text_and_values_but_not_markup():
    es = translator("es")
    out = es.html("page.drop.title", markup={"choose": '<span class="link">x</span>'})
    assert out == '<span class="link">x</span>, suéltala aquí o pégala'
    assert es.html("page.model.best", name="<b>&</b>") == "&lt;b&gt;&amp;&lt;/b&gt; (el mejor)"


def test_unknown_keys_and_missing_values_fail_loudly():
    es = translator("es")
    with pytest.raises(KeyError):
        es("page.nothing")
    with pytest.raises(KeyError):
        es("page.model.best")  # {name} not given
    assert es.get("report.machine.cpu", "cpu") == "CPU"
    assert es.get("report.machine.fan speed", "fan speed") == "fan speed"


def test_the_script_asks_only_for_messages_that_exist():
    js = (STATIC / "app.js").read_text()
    keys = set(re.findall(r'"(page\.[a-z_.]+)"', js))
    assert len(keys) > 30
    catalog = i18n.catalog("es")
    assert not keys - set(catalog), keys - set(catalog)


# ---- the page, over Flask's test client ----------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, colour_model) -> Path:
    return make_run(tmp_path_factory.mktemp("i18n") / "runs" / "demo", colour_model)


@pytest.fixture(scope="module")
def store(run_dir):
    store = ModelStore.from_paths([run_dir]).load()
    yield store
    store.close()


def _messages(page: str) -> dict:
    """The catalog the page hands its script, read back as a browser reads the attribute."""
    match = re.search(r"data-messages='([^']*)'", page)
    assert match, "no data-messages attribute"
    return json.loads(html.unescape(match.group(1)))


def _visible_text(page: str) -> str:
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


# Keys of the template's own text (the rest are written by the script).
TEMPLATE_KEYS = ("page.tagline", "page.label.model", "page.fact.architecture", "page.fact.accuracy",
                 "page.fact.latency", "page.fact.classes", "page.drop.choose", "page.drop.formats",
                 "page.status.loading", "page.noscript")


@pytest.mark.parametrize("request_kw, lang", [
    ({"query_string": {"lang": "es"}}, "es"),
    ({"headers": {"Accept-Language": "es"}}, "es"),
    ({"headers": {"Accept-Language": "es-ES,es;q=0.9,en;q=0.8"}}, "es"),
    ({"query_string": {"lang": "en"}, "headers": {"Accept-Language": "es"}}, "en"),
    ({"headers": {"Accept-Language": "fr-FR,fr;q=0.9"}}, "en"),
    ({}, "en"),
])
def test_the_page_speaks_the_negotiated_language(store, request_kw, lang):
    client = create_app(store).test_client()
    r = client.get("/", **request_kw)
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert f'<html lang="{lang}"' in page
    assert r.headers["Content-Language"] == lang
    assert "Accept-Language" in r.headers["Vary"]
    own, other = translator(lang), translator("en" if lang == "es" else "es")
    text = _visible_text(page)
    for key in TEMPLATE_KEYS:
        assert re.search(rf"(?<!\w){re.escape(own(key))}(?!\w)", text), key
        assert not re.search(rf"(?<!\w){re.escape(other(key))}(?!\w)", text), key  # "Model" is in "Modelo"
    # The script's strings are the whole page.* catalog of the same language, exactly.
    assert _messages(page) == own.subset("page.")
    assert f'data-decimal="{own.decimal}"' in page


def test_the_spanish_page_in_detail(store):
    page = create_app(store).test_client().get("/?lang=es").get_data(as_text=True)
    text = " ".join(_visible_text(page).split())
    assert "Suelta una foto para ver qué clase cree el modelo que es." in text
    assert '<span class="drop-title"><span class="link">Elige una foto</span>, suéltala aquí o pégala</span>' in page
    assert 'alt="La foto que has elegido"' in page and 'aria-label="Probabilidad de cada clase"' in page
    # one link to the other language, the current one marked
    assert '<a href="?lang=en" lang="en" hreflang="en">English</a>' in page
    assert '<span lang="es" aria-current="true">Español</span>' in page
    # the apostrophe of an English message cannot end the single-quoted attribute early
    assert _messages(create_app(store).test_client().get("/?lang=en").get_data(as_text=True))[
        "page.latency.offline"] == "{ms} in compare's benchmark"


def test_serve_lang_sets_the_default_only(store):
    client = create_app(store, lang="es").test_client()
    assert '<html lang="es"' in client.get("/").get_data(as_text=True)
    assert '<html lang="es"' in client.get("/", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert '<html lang="en"' in client.get("/", headers={"Accept-Language": "en-GB"}).get_data(as_text=True)
    assert '<html lang="en"' in client.get("/?lang=en").get_data(as_text=True)
    with pytest.raises(ValueError, match="fr"):
        create_app(store, lang="fr")


def test_the_api_is_the_same_in_every_language(store):
    client = create_app(store).test_client()
    photo = encode(colour_image(COLOURS["green"], seed=7))
    answers = {}
    for lang in ("en", "es"):
        headers = {"Accept-Language": lang}
        models = client.get(f"/api/models?lang={lang}", headers=headers).get_json()
        predicted = client.post(f"/api/predict?lang={lang}", data=photo,
                                headers={**headers, "Content-Type": "image/jpeg"})
        error = client.post("/api/predict", data=b"just text", headers={**headers, "Content-Type": "image/jpeg"})
        body = predicted.get_json()
        answers[lang] = (models["default"], [m["classes"] for m in models["models"]], sorted(body),
                         body["label"], body["probabilities"], error.status_code, error.get_json())
    assert answers["en"] == answers["es"]
    assert answers["es"][3] == "green"
    assert answers["es"][5] == 415 and answers["es"][6]["kind"] == "unsupported"


# ---- the command line ----------------------------------------------------------------------------

def test_serve_lang_es_serves_the_spanish_page(run_dir):
    proc = subprocess.Popen([sys.executable, "-m", "image_classifier.cli", "serve", str(run_dir), "--port", "0",
                             "--threads", "2", "--lang", "es"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        url = None
        for line in proc.stdout:
            match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            if match:
                url = match.group(1)
                break
        assert url, proc.stderr.read()
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.headers["Content-Language"] == "es"
            assert "Suelta una foto" in resp.read().decode()
        req = urllib.request.Request(url, headers={"Accept-Language": "en-US,en;q=0.9"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert "Drop a photo" in resp.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()


def test_serve_refuses_an_unsupported_lang(capsys):
    from image_classifier.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "somewhere", "--lang", "fr"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fr'" in capsys.readouterr().err
