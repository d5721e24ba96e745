"""The report in English and Spanish.

The same study (real metrics of real tiny images, every optional part of the report filled in)
written with ``lang="es"`` speaks Spanish in its headings, table headers, sentences and figures,
writes numbers with decimal commas, and leaves class and model names exactly as given; English is
the default and unchanged; ``comparison.csv`` and ``metrics.json`` do not depend on the language;
``--lang`` and ``lang=`` are checked; every catalog key the code names exists in both catalogs.
A real ``compare(..., lang="es")`` and ``evaluate --lang es`` close the loop.
"""
from __future__ import annotations

import copy
import html
import json
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

import compare_child
import image_classifier
from conftest import CHROMIUM, make_image_folder, rendered_ink
from image_classifier import i18n
from image_classifier.cli import main
from image_classifier.errors import ImageClassifierError
from image_classifier.i18n import translator
from image_classifier.report import plots, write_report
from image_classifier.results import Study
from image_classifier.study.evaluate import EvaluateOptions, run_evaluate
from study_helpers import make_study_json

SRC = Path(image_classifier.__file__).parent
# Accents, a name that looks like a catalog placeholder, and markup: all must come out as given.
CLASSES = ["Pelé Ñúñez", "{model}", "<b>x</b>"]
SECOND = "modelo_{a}"  # the second model's name looks like a placeholder of the sentences it is in

# What today's English report calls its sections and columns: none may be left in the Spanish one.
ENGLISH_HEADINGS = [
    "Comparison (test split)", "Results", "Which differences are real?", "Inference backends", "Models", "Data",
    "Duplicates", "Faces", "Warnings from the data check", "Machine and versions", "Reproduce",
]
ENGLISH_HEADERS = [
    "model", "val acc", "test acc [95% CI]", "macro-F1", "params", "size MB", "file→label ms", "train",
    "test acc face / no face", "speedup vs PyTorch", "serve default", "class", "precision", "recall",
    "test images", "no face", "one face", "several faces", "kind", "files", "kept together in", "file", "true",
    "predicted", "confidence", "reason", "all", "item", "value", "train", "val", "test",
]
ENGLISH_SENTENCES = [
    "Served model", " is more accurate than ", "test accuracy", "Exact McNemar tests", "Calibration:",
    "The test split has only", "The original study published", "Other work was running", "chosen on the training and validation images",
    "stratified split", "Every model was trained", "Latency:", "warm-up", " seconds: ", "Folder ", "Warnings:",
    "misclassified", "confusion matrix", "training curves", "reliability diagram", "duplicate groups",
    "unreadable files", "serve uses", "finding the faces", "show a face", "logical cores", "torch threads",
]
SPANISH_HEADINGS = [
    "Comparación (partición de prueba)", "¿Qué diferencias son reales?", "Backends de inferencia", "Modelos", "Datos",
    "Duplicados", "Caras", "Avisos de la comprobación de los datos", "Máquina y versiones", "Reproducir",
]


def full_study_json(tmp_path: Path) -> dict:
    """test_report's study with every optional part of the report: an alert, backends, faces, a
    face model, a busy machine, unreadable files, duplicate groups, speed settings, timings."""
    s = make_study_json(tmp_path, classes=CLASSES)
    a, b = s["models"]
    b["name"], b["model_dir"] = SECOND, f"models/{SECOND}"
    for p in s["pairwise"]:
        p["model_a"], p["model_b"] = [SECOND if n == "tiny_b" else n for n in (p["model_a"], p["model_b"])]
    s["alerts"] = ["these images were trained on"]
    s["speed_config"] = {"warmup": 3, "repeats": 50, "throughput_repeats": 5, "throughput_batch": 32}
    s["machine"] = {"cpu": "test cpu", "logical cores": 2, "torch threads": 1, "memory": "7.8 GiB"}
    s["data"]["unreadable"] = [{"path": "bad.jpg", "reason": "truncated"}]
    s["data"]["duplicates"]["groups"].append({"kind": "exact + near", "files": ["c.jpg", "d.jpg"],
                                              "subset": "train, val"})
    # The counts a run stores (the report writes the sentences from them, in its language).
    s["data"]["duplicates"].update({"exact_groups": 1, "exact_files": 2, "near_pairs": 3, "near_groups": 1,
                                    "images_in_groups": 4, "groups_by_subset": {"train": 2},
                                    "crossing_subsets": 1})
    s["data"]["faces"] = {"with_face": 20, "images": 30, "detection_rate": 2 / 3, "methods": {"hog": 15, "cnn": 5},
                          "per_class": {c: {"none": 1, "one": 8, "several": 1} for c in CLASSES}, "seconds": 1.0}
    a["speed"]["load_avg_1m"] = 3.5
    a["backends"] = {"torch": {"latency_ms_p50": 1.5, "e2e_latency_ms_p50": 3.0, "throughput_ips": 500.0,
                               "speedup_latency": 1.0},
                     "onnx": {"latency_ms_p50": 0.9, "e2e_latency_ms_p50": 2.1, "throughput_ips": 800.0,
                              "speedup_latency": 1.67}}
    a["export"], a["fastest"] = {"exported": True}, "onnx"
    a["serve_backend"] = {"name": "onnx", "reason": "fastest here"}
    a["skipped"] = {"onnx-int8": "not exported"}
    a["faces"] = {"test_accuracy_face": 0.9, "test_accuracy_noface": 0.5, "test_images_face": 20,
                  "test_images_noface": 10}
    b["family"] = "face"
    b["backend"] = {"name": "torch", "reason": "asked for"}
    b["faces"] = {"test_accuracy_face": 0.7, "test_accuracy_noface": 0.4, "test_images_face": 20,
                  "test_images_noface": 10}
    s["timings"] = {"audit_seconds": 1.5, "train_seconds": 75.0, "evaluation_seconds": 2.0}
    return s


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("i18n-report")
    data = full_study_json(root)
    studies = {"en": Study.from_json(copy.deepcopy(data)), "es": Study.from_json(copy.deepcopy(data))}
    files = {"en": write_report(studies["en"], root / "en"),  # the default language
             "es": write_report(studies["es"], root / "es", lang="es")}
    return {"root": root, "json": data, "study": studies["es"], "files": files,
            "html": {k: f.html.read_text(encoding="utf-8") for k, f in files.items()},
            "md": {k: f.markdown.read_text(encoding="utf-8") for k, f in files.items()}}


def _texts(pattern: str, text: str) -> list[str]:
    """The text inside every match of ``pattern`` (tags stripped, entities decoded)."""
    return [html.unescape(re.sub(r"<[^>]+>", "", m)).strip() for m in re.findall(pattern, text, flags=re.S)]


def _md_headers(md: str) -> list[str]:
    """The cells of every Markdown table's header row (the row above ``|---``)."""
    lines = md.splitlines()
    return [c.strip() for i, line in enumerate(lines[1:]) if line.startswith("|---")
            for c in lines[i].strip("|").split(" | ")]


def _es(x: float, digits: int) -> str:
    return f"{x:.{digits}f}".replace(".", ",")


# ---- the Spanish report ---------------------------------------------------------------------------

def test_the_spanish_report_has_spanish_headings_and_headers_and_no_english_ones(reports):
    page, md = reports["html"]["es"], reports["md"]["es"]
    assert page.startswith('<!DOCTYPE html>\n<html lang="es">')
    headings = _texts(r"<h[1-3][^>]*>(.*?)</h[1-3]>", page)
    md_headings = [line.lstrip("#").strip() for line in md.splitlines() if line.startswith("#")]
    assert set(SPANISH_HEADINGS) <= set(headings)
    assert {"Comparación (partición de prueba)", "Backends de inferencia", "Modelos", "Datos", "Máquina y versiones",
            "Reproducir"} <= set(md_headings)
    headers = _texts(r"<th[^>]*>(.*?)</th>", page) + _md_headers(md)
    assert {"modelo", "exact. val", "exact. prueba [IC 95 %]", "F1 macro", "clase", "precisión", "exhaustividad",
            "imágenes de prueba", "aceleración frente a PyTorch", "sin cara", "juntos en", "núcleos lógicos",
            "entrenamiento", "validación", "prueba"} <= set(headers)
    nav = _texts(r"<nav>(.*?)</nav>", page)[0]
    captions = _texts(r"<(?:figcaption|summary)>(.*?)</(?:figcaption|summary)>", page)
    alts = re.findall(r'alt="([^"]*)"', page) + re.findall(r"!\[([^\]]*)\]", md)
    assert not [h for h in ENGLISH_HEADINGS if h in headings or h in md_headings or h in nav.split()]
    assert not [h for h in ENGLISH_HEADERS if h in headers]
    english_left = [s for s in ENGLISH_SENTENCES if s in page or s in md or any(s in c for c in captions + alts)]
    assert not english_left


def test_the_spanish_report_says_its_findings_in_spanish(reports):
    page, md, study = reports["html"]["es"], reports["md"]["es"], reports["study"]
    a = study.model("tiny_a").test
    headline = (f"Modelo servido (elegido con las imágenes de entrenamiento y validación): tiny_a — exactitud en prueba {_es(100 * a.accuracy, 1)} % "
                f"(IC 95 % {_es(100 * a.accuracy_ci[0], 0)} %–{_es(100 * a.accuracy_ci[1], 0)} % sobre {a.n} "
                f"imágenes de prueba), F1 macro {_es(a.macro_f1, 3)}")
    assert f"**{headline}" in md and f"<strong>{headline}" in page
    (verdict,) = _texts(r'<ul class="sig">(.*?)</ul>', page)
    assert verdict.startswith(f"tiny_a es más exacto que {SECOND}: tiny_a {_es(100 * a.accuracy, 1)} % frente a "
                              f"{SECOND} ")
    assert '<li class="good">' in page  # the significant pair is marked as such, from the test's outcome
    assert "Pruebas exactas de McNemar sobre las mismas 30 imágenes de prueba" in md
    assert "p &lt; 0,05" in md
    assert "La partición de prueba solo tiene 30 imágenes" in page
    assert "(carga media de 1 minuto por encima de los 2 núcleos: tiny_a 3,5)" in page
    assert "20 de 30 imágenes muestran una cara (67 %" in md
    assert "Se dejaron fuera 1 archivos ilegibles" in page
    # The run's steps by their Spanish names, durations with a decimal comma.
    assert "comprobación de los datos: 1,5 s; entrenamiento: 1,2 min; evaluación: 2,0 s; informe: " in md
    # The data check's sentences, written from the stored counts, not the stored English.
    assert ("La comprobación de los datos encontró 1 grupos de archivos idénticos byte a byte (2 archivos) y 3 "
            "pares de casi duplicados") in md
    assert ("La partición trata cada uno de los 2 grupos de duplicados (4 imágenes) como una unidad, así que "
            "ninguna foto está a la vez en entrenamiento y en prueba (2 en entrenamiento); grupos repartidos "
            "entre subconjuntos: 1.") in page
    assert "kept in one subset" not in page + md and "1 group" not in md
    # A duplicate group's kind and subsets are named in Spanish too.
    assert "<td>exacto + casi</td><td>c.jpg, d.jpg</td><td>entrenamiento, validación</td>" in page
    # The command that redoes the run writes this report: in Spanish.
    assert f"<pre>{html.escape(study.command)} --lang es</pre>" in page


def test_spanish_accuracy_cells_have_decimal_commas(reports):
    page, md, study = reports["html"]["es"], reports["md"]["es"], reports["study"]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page.split("<tbody>", 1)[1].split("</tbody>", 1)[0])
    for row, m in zip(rows, study.models, strict=True):
        cells = _texts(r"<td>(.*?)</td>", row)
        lo, hi = m.test.accuracy_ci
        expected = f"{_es(m.test.accuracy, 3)} [{_es(lo, 2)}; {_es(hi, 2)}]"
        assert cells[1] == _es(m.validation.accuracy, 3)
        assert cells[2] == expected and "." not in cells[2]
        assert f"| {_es(m.validation.accuracy, 3)} | {expected} | {_es(m.test.macro_f1, 3)} |" in md
    for c in study.model("tiny_a").test.per_class:
        assert f"| {_es(c.precision, 3)} | {_es(c.recall, 3)} | {_es(c.f1, 3)} | {c.support} |" in md


def test_class_and_model_names_come_out_exactly_as_given(reports):
    page, md, study = reports["html"]["es"], reports["md"]["es"], reports["study"]
    # Every table with a class column (per-class scores of each model, the split, the faces) lists
    # the classes as given, in both files.
    tables = re.findall(r"<table>(.*?)</table>", page, flags=re.S)
    class_tables = [t for t in tables if _texts(r"<th>(.*?)</th>", t)[:1] == ["clase"]]
    assert len(class_tables) == 4
    for table in class_tables:
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1])
        firsts = [re.match(r"<td>(.*?)</td>", row).group(1) for row in rows]
        assert [f for f in firsts if f != "total"] == [html.escape(c) for c in CLASSES]
    md_form = ["Pelé Ñúñez", "{model}", "&lt;b>x&lt;/b>"]
    lines = md.splitlines()
    md_tables = [i for i, line in enumerate(lines) if line.startswith("| clase |")]
    assert len(md_tables) == 4
    for i in md_tables:
        firsts = [line.split(" | ")[0][2:] for line in lines[i + 2:i + 2 + len(CLASSES)]]
        assert firsts == md_form
    assert "<b>x</b>" not in page and "<b>x</b>" not in md
    assert f'· {html.escape(", ".join(CLASSES))}</p>' in page
    # A model called like a placeholder stays itself in every sentence, heading and table.
    assert f"### {SECOND}" in md and f"<h3>{SECOND}</h3>" in page
    assert f"{SECOND}: la búsqueda de las caras" in page
    assert page.count(SECOND) > 5
    errors = study.model(SECOND).errors
    assert errors and f"<td>{html.escape(errors[0].true)}</td>" in page


# ---- the figures ----------------------------------------------------------------------------------

def _tick_labels(axis) -> list[str]:
    axis.figure.canvas.draw()
    return [label.get_text() for label in axis.get_ticklabels() if label.get_text()]


def test_the_figures_are_labelled_in_spanish_with_decimal_commas(reports):
    study, es = reports["study"], translator("es")
    m = study.model("tiny_a")
    fig = plots.confusion_matrix_figure(m.test.confusion_matrix, m.test.classes, title=m.name, t=es)
    (ax,) = fig.axes
    correct = sum(m.test.confusion_matrix[i][i] for i in range(len(CLASSES)))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicha", "real")
    assert ax.get_title() == f"tiny_a — {correct}/{m.test.n} aciertos ({_es(100 * correct / m.test.n, 1)} %)"
    assert _tick_labels(ax.xaxis) == CLASSES == _tick_labels(ax.yaxis)
    plt.close(fig)

    fig = plots.training_curves_figure(m.training.history, title="tiny_a: entrenamiento",
                                       best_epoch=m.validation.best_epoch, t=es)
    ax_loss, ax_acc = fig.axes
    assert (ax_loss.get_xlabel(), ax_loss.get_ylabel(), ax_acc.get_ylabel()) == ("época", "pérdida", "exactitud")
    assert [x.get_text() for x in ax_acc.get_legend().get_texts()] == [
        "exactitud de entrenamiento", "exactitud de validación", "época conservada"]
    ticks = _tick_labels(ax_acc.yaxis)
    assert "0,2" in ticks and not any("." in x for x in ticks)
    plt.close(fig)

    fig = plots.summary_figure(study.rows(), best="tiny_a", t=es)
    (ax,) = fig.axes
    assert ax.get_title() == "Exactitud frente a velocidad (área del marcador ∝ tamaño en disco)"
    assert ax.get_xlabel() == "latencia por imagen con lote 1, mediana (ms, escala logarítmica)"
    assert ax.get_ylabel() == "exactitud en prueba (barras: IC 95 %)"
    labels = [t.get_text() for t in ax.texts]
    assert f"tiny_a (seleccionado)\n{_es(100 * m.test.accuracy, 1)} %, 0,5 MB" in labels
    assert all(x.endswith(" %") for x in _tick_labels(ax.yaxis))
    plt.close(fig)

    fig = plots.reliability_figure([(x.name, x.test.reliability, x.test.ece) for x in study.models], t=es)
    (ax,) = fig.axes
    assert ax.get_title() == "Calibración en la partición de prueba (área del punto ∝ imágenes)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("confianza (probabilidad de la clase más probable)",
                                                  "exactitud en el intervalo")
    assert [x.get_text() for x in ax.get_legend().get_texts()] == [
        "calibración perfecta", f"tiny_a (ECE {_es(m.test.ece, 3)})", f"{SECOND} (ECE {_es(study.model(SECOND).test.ece, 3)})"]
    assert not any("." in x for x in _tick_labels(ax.xaxis))
    plt.close(fig)

    errors = study.model(SECOND).errors
    fig = plots.error_gallery_figure(errors, title=SECOND, t=es)
    assert fig._suptitle.get_text() == f"{SECOND}: {len(errors)} mal clasificadas"
    top = max(errors, key=lambda e: e.confidence)
    assert fig.axes[0].get_title("left") == (f"real: {top.true}\npred.: {top.predicted} "
                                             f"({_es(100 * top.confidence, 0)} %)")
    plt.close(fig)


def test_the_english_figures_are_unchanged(reports):
    study = reports["study"]
    m = study.model("tiny_a")
    fig = plots.training_curves_figure(m.training.history, title="tiny_a: training", best_epoch=m.validation.best_epoch)
    ax_loss, ax_acc = fig.axes
    assert (ax_loss.get_xlabel(), ax_loss.get_ylabel()) == ("epoch", "loss")
    assert [x.get_text() for x in ax_acc.get_legend().get_texts()] == [
        "train accuracy", "validation accuracy", "kept epoch"]
    assert "0.2" in _tick_labels(ax_acc.yaxis)
    plt.close(fig)
    fig = plots.reliability_figure([(x.name, x.test.reliability, x.test.ece) for x in study.models])
    assert fig.axes[0].get_title() == "Calibration on the test split (dot area ∝ images)"
    plt.close(fig)


# ---- English, and what does not depend on the language --------------------------------------------

def test_english_is_the_default_and_the_data_files_do_not_depend_on_the_language(reports, tmp_path):
    files, page, md = reports["files"], reports["html"]["en"], reports["md"]["en"]
    assert page.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert files["en"].csv.read_bytes() == files["es"].csv.read_bytes()
    metrics = {k: json.loads(f.metrics_json.read_text()) for k, f in files.items()}
    for m in metrics.values():
        del m["timings"]["report_seconds"]
    assert metrics["en"] == metrics["es"]
    a = reports["study"].model("tiny_a").test
    assert (f"**Served model (chosen on the training and validation images): tiny_a — test accuracy {a.accuracy:.1%} (95 % CI "
            f"{a.accuracy_ci[0]:.0%}–{a.accuracy_ci[1]:.0%} on {a.n} test images), macro-F1 {a.macro_f1:.3f}") in md
    assert set(ENGLISH_HEADINGS) - {"Results"} <= set(_texts(r"<h[1-3][^>]*>(.*?)</h[1-3]>", page))
    assert f"<pre>{html.escape(reports['study'].command)}</pre>" in page  # no --lang for the default
    assert f"| {a.accuracy:.3f} [{a.accuracy_ci[0]:.2f}, {a.accuracy_ci[1]:.2f}] |" in md
    # lang="en" said explicitly is the default.
    again = write_report(Study.from_json(copy.deepcopy(reports["json"])), tmp_path / "en", lang="en")
    assert again.markdown.read_text().splitlines()[:-1] == md.splitlines()[:-1]  # but for the report's own time


# ---- checked languages ----------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["compare", "DATA"], ["evaluate", "MODEL", "DATA"]])
def test_the_cli_refuses_an_unsupported_lang(command, tmp_path, capsys):
    argv = [str(tmp_path / c) if c.isupper() else c for c in command]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "run"), "--lang", "xx"])
    assert exit_info.value.code == 2
    assert "argument --lang: invalid choice: 'xx' (choose from 'en', 'es')" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_api_refuses_an_unsupported_lang_before_doing_anything(tmp_path):
    with pytest.raises(ImageClassifierError, match=r"unsupported report language 'fr': choose from en, es"):
        image_classifier.compare(tmp_path / "no-data", out=tmp_path / "run", lang="fr")
    assert not (tmp_path / "run").exists()
    # evaluate checks it before it looks for the model.
    with pytest.raises(ImageClassifierError, match=r"unsupported report language 'ES'"):
        run_evaluate(EvaluateOptions(model=tmp_path / "no-model", data=tmp_path, lang="ES"))
    with pytest.raises(ValueError, match="unsupported language 'xx'"):
        write_report(Study.from_json(make_study_json(tmp_path)), tmp_path / "r", lang="xx")


KEY_CALL = re.compile(r"""(?:\bt|\bEN|\btranslator\([^()]*\))(?:\.(plural|html|get))?\(\s*["'](report\.[^"']+)["']""")


def test_every_report_key_the_code_names_exists_in_both_catalogs():
    sources = [*sorted((SRC / "report").glob("*.py")), *sorted((SRC / "study").glob("*.py")),
               SRC / "cli" / "compare.py", SRC / "cli" / "evaluate.py"]
    used: set[str] = set()
    for path in sources:
        for method, key in KEY_CALL.findall(path.read_text(encoding="utf-8")):
            used |= {f"{key}.one", f"{key}.other"} if method == "plural" else {key}
    assert len(used) > 150  # the scan finds the report's keys
    for lang in i18n.SUPPORTED:
        missing = sorted(used - set(i18n.catalog(lang)))
        assert not missing, (lang, missing)


# ---- a real run in Spanish ------------------------------------------------------------------------

TINY, TWO_PHASE = compare_child.TINY, compare_child.TWO_PHASE
pytestmark = pytest.mark.usefixtures("compare_archs")  # registered while this module runs
FAST = dict(seed=1, val=0.3, test=0.3, speed_repeats=1, export=False, faces=False, progress=False, cache=False)


@pytest.fixture(scope="module")
def spanish_run(tmp_path_factory) -> tuple[Study, Path]:
    root = tmp_path_factory.mktemp("es-run")
    data = make_image_folder(root / "data", {"rojo": 8, "azul": 8, "{model}": 8})
    study = image_classifier.compare(data, out=root / "run", models=[TINY, TWO_PHASE], lang="es", **FAST)
    return study, data


def test_compare_lang_es_writes_the_report_in_spanish_and_the_data_in_english(spanish_run):
    study, data = spanish_run
    run = study.run_dir
    page = (run / "report.html").read_text(encoding="utf-8")
    md = (run / "report.md").read_text(encoding="utf-8")
    assert page.startswith('<!DOCTYPE html>\n<html lang="es">')
    assert "<h1>Comparación de clasificadores de imágenes: data</h1>" in page
    assert md.startswith("# Comparación de clasificadores de imágenes: data\n")
    assert "## Comparación (partición de prueba)" in md and "Modelo servido (elegido con las imágenes de entrenamiento y validación)" in md
    assert "<td>{model}</td>" in page
    for name in (TINY, TWO_PHASE):
        assert (run / f"plots/{name}-confusion.png").is_file()
    # metrics.json and the returned study keep the language-free title; the CSV is the same table.
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["title"] == study.title == "Image classifier comparison: data"
    assert (run / "comparison.csv").read_text().startswith("model,test_accuracy,")
    # The data check's findings: counted in metrics.json with the English sentences, said in Spanish.
    dups = metrics["data"]["duplicates"]
    assert dups["summary"].startswith(f"The data check found {dups['exact_groups']} groups of byte-identical files")
    assert f"La comprobación de los datos encontró {dups['exact_groups']} grupos de archivos idénticos" in md


def test_evaluate_lang_es_writes_a_spanish_report_and_prints_english(spanish_run, tmp_path, capsys):
    study, data = spanish_run
    out = tmp_path / "ev"
    split = study.run_dir / "split.csv"
    assert main(["evaluate", str(study.run_dir), str(data), "--split", str(split), "--subset", "test",
                 "--out", str(out), "--no-speed", "--lang", "es"]) == 0
    printed = capsys.readouterr().out
    assert f"{study.best.name}: test accuracy" in printed and "report: " in printed  # the terminal stays English
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith('<!DOCTYPE html>\n<html lang="es">')
    assert (f"<h1>Evaluación de {study.best.name} sobre data (subconjunto «prueba» de "
            f"{html.escape(str(split))})</h1>") in page
    assert f"<strong>{study.best.name}: exactitud en prueba " in page
    assert json.loads((out / "metrics.json").read_text())["title"] == (
        f"Evaluation of {study.best.name} on data (subset 'test' of {split})")
    shutil.rmtree(out)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM, reason="no chromium")
def test_the_spanish_report_renders_in_chromium(reports, tmp_path):
    # rendered content, not a blank page
    assert rendered_ink(reports["files"]["es"].html, tmp_path / "shot.png", "420,2000") > 0.02
