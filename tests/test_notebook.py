"""``examples/study.ipynb`` runs end to end (nbclient, a real kernel) on a tiny synthetic folder with
the study's simple CNN for one epoch, and shows what it promises: the table's rows, the best model,
its confusion matrix, its errors and a prediction."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from conftest import make_image_folder
from image_classifier import load_model
from image_classifier.runs import model_dir_for

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "study.ipynb"
MODEL = "simple_cnn"


def _text(cell) -> str:
    """Everything a code cell showed: streams, results (plain text and HTML) and errors."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts += [out["data"].get("text/plain", ""), out["data"].get("text/html", "")]
    return "\n".join(parts)


@pytest.mark.slow
def test_the_study_notebook_runs_and_shows_its_results(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "photos", {"cats": 8, "dogs": 8})
    run = tmp_path / "run"
    for key, value in {"DATA": data, "OUT": run, "MODELS": MODEL, "EPOCHS": 1, "QUICK": 1}.items():
        monkeypatch.setenv(f"IMAGE_CLASSIFIER_NOTEBOOK_{key}", str(value))
    # The kernel is a child process: it finds this checkout's package the way the tests do.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                   os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    params, study_cell, table, best, confusion, errors, predict = (_text(c) for c in code)
    metrics = json.loads((run / "metrics.json").read_text())
    (model,) = metrics["models"]
    assert metrics["selection"]["best"] == MODEL
    assert f"models: ['{MODEL}']" in params
    # The study shows its table (a header row and one row: the model) and its figures, embedded.
    assert study_cell.count("<tr>") == 2 and f"<td>{MODEL}</td>" in study_cell
    assert 'src="data:image/png;base64,' in study_cell
    # The table, one row: a DataFrame where pandas is installed (the kernel runs this Python), else a list.
    if importlib.util.find_spec("pandas") is not None:
        assert table.count(f"<td>{MODEL}</td>") == 1, table
    else:
        assert table.count(f"'model': '{MODEL}'") == 1, table
    assert f"best model: {MODEL}" in best and f"test accuracy {model['test']['accuracy']:.3f}" in best
    assert "cats" in confusion and "dogs" in confusion
    assert f"{len(model['errors'])} of {model['test']['n']} test images misclassified" in errors
    photo, label = predict.strip().split(": ")
    assert photo == os.path.join("cats", "cats_000.jpg")
    assert label == load_model(model_dir_for(run, MODEL)).predict([data / photo])[0]  # the selected model's answer
