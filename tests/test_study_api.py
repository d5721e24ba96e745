"""``image_classifier.compare(...)`` from Python: a real tiny study (two fast test architectures
trained on a synthetic folder), checked against what the run wrote on disk and against the saved
models themselves."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import compare_child
import image_classifier
from conftest import make_image_folder, synthetic_image
from image_classifier.results import table as results_table
from image_classifier.errors import ImageClassifierError
from image_classifier.results import COLUMNS, Study
from image_classifier.inference.loading import load_model

TINY, TWO_PHASE = compare_child.TINY, compare_child.TWO_PHASE
pytestmark = pytest.mark.usefixtures("compare_archs")  # registered while this module runs
CLASSES = {"red": 10, "blue": 10, "green": 10}
FAST = dict(seed=1, val=0.3, test=0.3, speed_repeats=1, export=False, faces=False, progress=False, cache=False)


def _mislabel(data: Path, folder: str, looks_like: int, n: int, seed: int) -> None:
    """``n`` images drawn like class ``looks_like`` filed under ``folder``: mistakes to be made."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        synthetic_image(looks_like, rng).save(data / folder / f"odd_{i}.jpg", quality=92)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    root = tmp_path_factory.mktemp("api")
    data = make_image_folder(root / "data", CLASSES)
    _mislabel(data, "blue", 0, 4, seed=11)  # drawn as "red" (the first class)
    _mislabel(data, "green", 1, 4, seed=12)  # drawn as "blue"
    lines: list[str] = []
    study = image_classifier.compare(data, out=root / "run", models=[TINY, TWO_PHASE], on_progress=lines.append,
                                     **FAST)
    assert any(line.startswith("selected: ") for line in lines)
    return study


@pytest.fixture
def without_pandas(monkeypatch):
    monkeypatch.setattr(results_table, "pandas", None)


def _cards(study: Study) -> dict[str, dict]:
    """The cards of the trained models (not of a kept ensemble: it has no training of its own)."""
    return {m.name: json.loads((study.run_dir / m.model_dir / "model.json").read_text()) for m in study.models
            if m.family != "ensemble"}


def _rows(study: Study) -> list[str]:
    """The comparison's rows: the two models, then the ensemble when compare kept one."""
    kept = study.ensemble is not None and study.ensemble.outcome == "kept"
    return [TINY, TWO_PHASE] + ([study.ensemble.name] if kept else [])


def test_best_is_the_candidate_no_other_beats_beyond_the_noise(study):
    selection = study.selection
    expected = selection.best
    assert study.best.name == expected
    # No candidate is more accurate than the chosen one beyond the noise (the 95 % paired-bootstrap
    # interval of chosen minus it is not all below 0), and the chosen one is among those tied.
    others = [c for c in selection.candidates if c.name != expected]
    assert others and all(c.difference_high is not None and c.difference_high >= 0 for c in others)
    assert selection.candidate(expected).tied
    # Not a folder of people: strangers played no part.
    assert not selection.people and selection.can_reject is None
    assert selection.reason.startswith(f"{expected}: validation accuracy ")
    assert (study.run_dir / "best").resolve() == (study.run_dir / "models" / expected).resolve()
    assert study.model_path() == study.run_dir / "models" / expected
    assert load_model(study.model_path(TINY), backend="torch").card.architecture == TINY


def test_table_is_the_comparison_csv(study, without_pandas):
    table = study.table
    assert isinstance(table, list) and [r["model"] for r in table] == _rows(study)
    with (study.run_dir / "comparison.csv").open(newline="") as fh:
        written = list(csv.DictReader(fh))
    for row, line in zip(table, written, strict=True):
        assert list(row) == list(COLUMNS) == list(line)
        assert row["test_accuracy"] == float(line["test_accuracy"])
        assert row["val_accuracy"] == float(line["val_accuracy"])
        assert row["selected"] == (line["selected"] == "True") == (row["model"] == study.best.name)


def test_table_is_a_dataframe_with_pandas(study):
    pandas = pytest.importorskip("pandas")
    table = study.table
    assert isinstance(table, pandas.DataFrame)
    assert list(table.columns) == list(COLUMNS) and list(table["model"]) == _rows(study)
    assert table.loc[table["selected"], "model"].tolist() == [study.best.name]
    confusion = study.confusion(TINY)
    assert list(confusion.index) == list(confusion.columns) == study.model(TINY).test.classes
    assert len(study.errors(TINY)) == len(study.model(TINY).errors)


def test_confusion_counts_the_per_image_predictions(study, without_pandas):
    with (study.run_dir / "predictions.csv").open(newline="") as fh:
        predictions = list(csv.DictReader(fh))
    for m in study.models:
        confusion = study.confusion(m.name)
        assert list(confusion) == m.test.classes and sorted(confusion) == sorted(CLASSES)  # rows: true class
        pairs = Counter((p["true"], p["pred"]) for p in predictions if p["model"] == m.name)
        assert {(t, p): n for t, row in confusion.items() for p, n in row.items() if n} == dict(pairs)
        n_test = sum(pairs.values())
        assert sum(confusion[c][c] for c in confusion) / n_test == pytest.approx(m.test.accuracy)
    assert study.confusion() == study.confusion(study.best.name)


def test_errors_are_really_misclassified(study, without_pandas):
    checked = 0
    for m in study.models:
        errors = study.errors(m.name)
        assert len(errors) == m.test.n - sum(row[i] for i, row in enumerate(m.test.confusion_matrix))
        assert [e["confidence"] for e in errors] == sorted((e["confidence"] for e in errors), reverse=True)
        if not errors:
            continue
        classifier = load_model(study.run_dir / m.model_dir, backend="torch")
        probs = classifier.predict_details([e["path"] for e in errors])[0]
        for e, p in zip(errors, probs):
            assert e["true"] == Path(e["path"]).parent.name  # the folder is the true class
            # The saved model, asked again, gives the wrong class with the confidence reported.
            assert classifier.classes[p.argmax()] == e["predicted"] != e["true"]
            assert p.max() == pytest.approx(e["confidence"], abs=1e-6)
            checked += 1
    assert checked, "the tiny models made no mistake: nothing was checked"


def test_repr_html_shows_the_table_and_the_figures(study):
    page = study._repr_html_()
    assert page.count("<tr>") == 1 + len(study.models)
    for m in study.models:
        assert f"<td>{m.name}</td>" in page
    assert f"Served model (chosen on the training and validation images): <b>{study.best.name}</b>" in page
    figures = study.plot_paths()
    assert len(figures) >= 1 + 2 * len(study.models)  # reliability, and each model's confusion and curves
    assert page.count('src="data:image/png;base64,') == len(figures)


def test_metrics_json_round_trips_into_the_study(study):
    loaded = Study.load(study.run_dir)
    assert loaded == study
    assert loaded.report_path == study.report_path == study.run_dir / "report.html"
    assert loaded.report_path.is_file()
    assert loaded.to_json() == json.loads((study.run_dir / "metrics.json").read_text())


def test_a_second_call_reuses_the_trained_models(study):
    lines: list[str] = []
    again = image_classifier.compare(study.data.root, out=study.run_dir, models=[TINY, TWO_PHASE],
                                     on_progress=lines.append, **FAST)
    assert sum("(finished, card matches)" in line for line in lines) == 2
    assert not any("training " in line for line in lines)
    assert [m.test for m in again.models] == [m.test for m in study.models]


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    data = make_image_folder(tmp_path / "d", {"a": 4, "b": 4})
    with pytest.raises(ImageClassifierError, match="unknown architecture"):
        image_classifier.compare(data, out=tmp_path / "r", models=["nope"])
    with pytest.raises(ImageClassifierError, match="resume must be one of"):
        image_classifier.compare(data, out=tmp_path / "r", models=[TINY], resume="sometimes")
    with pytest.raises(TypeError, match="colour"):
        image_classifier.compare(data, out=tmp_path / "r", models=[TINY], colour="red")
    assert not (tmp_path / "r").exists()
