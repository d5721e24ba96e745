"""What a study found, typed: :class:`Study` (one ``compare`` or ``evaluate`` run) and its
:class:`ModelResult` per model (:mod:`.schema`), with the data, split, environment and significance tests.

A run's ``metrics.json`` is :meth:`Study.to_json`, and :meth:`Study.load` reads it back, so the
report, ``comparison.csv``, the terminal table, ``serve`` and a notebook all read one structure.

In a notebook, a :class:`Study` shows its table and figures (:meth:`Study._repr_html_`);
:attr:`Study.table`, :meth:`Study.confusion` and :meth:`Study.errors` are pandas DataFrames when
pandas is installed (it is not a dependency), else plain lists and dicts.
"""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from image_classifier.errors import ModelFormatError
from image_classifier.jsonable import Jsonable, json_field
from image_classifier.results.schema import (
    DataSummary, EnsembleInfo, Environment, ModelResult, PairwiseTest, Selection,
)
from image_classifier.results.table import COLUMNS, NOTEBOOK_COLUMNS, _pandas, cell, model_row
from image_classifier.runs import METRICS_NAME, REPORT_HTML_NAME, read_metrics

#: What the scored images of a compare run are called (``evaluate`` may score other images).
TEST_IMAGES = "test images"


@dataclass(kw_only=True)
class Study(Jsonable):
    """One ``compare`` (several models, one selected on validation) or ``evaluate`` (one model) run.

    ``run_dir`` is where its files are (not part of ``metrics.json``)."""

    title: str
    scored_set: str = TEST_IMAGES  # what the scored images are called
    created_utc: str = ""
    command: str = ""  # the explicit command line that redoes the run
    invoked_as: str = ""
    data: DataSummary
    environment: Environment = json_field(default_factory=Environment, flatten=True)  # keys "machine", "versions"
    speed_config: dict[str, Any] | None = None  # evaluate.speed.SpeedConfig's repeat counts
    selection: Selection | None = None  # compare only
    models: list[ModelResult]
    pairwise: list[PairwiseTest] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # shown first (e.g. "these images were trained on")
    timings: dict[str, float] = field(default_factory=dict)  # {what: seconds}
    #: Study-wide figures, relative to ``run_dir``: "summary", "reliability".
    plots: dict[str, str] = json_field(default_factory=dict, omit="empty")
    #: compare's ensemble step (None: not tried, or a run saved before ensembles).
    ensemble: EnsembleInfo | None = json_field(default=None, omit="none")
    run_dir: Path | None = json_field(default=None, compare=False, skip=True)

    @classmethod
    def from_json(cls, data: dict[str, Any], run_dir: str | os.PathLike | None = None) -> Study:
        """The study of a ``metrics.json`` (:meth:`to_json` writes one) found in ``run_dir``."""
        study = super().from_json(data)
        study.run_dir = Path(run_dir) if run_dir is not None else None
        return study

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Study:
        """The study a finished ``compare`` or ``evaluate`` run wrote into ``run_dir``."""
        data = read_metrics(run_dir)
        if data is None:
            raise ModelFormatError(f"{Path(run_dir) / METRICS_NAME} is missing or unreadable: "
                                   "pass a directory written by `image-classifier compare` or `evaluate`")
        try:
            return cls.from_json(data, run_dir)
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFormatError(f"{Path(run_dir) / METRICS_NAME} is not a study's metrics ({err!r})") from err

    # -- what a notebook asks ---------------------------------------------------------------------
    @property
    def best(self) -> ModelResult | None:
        """The model selected on validation accuracy (the one model of an ``evaluate``)."""
        if self.selection is not None:
            return self.model(self.selection.best)
        return self.models[0] if len(self.models) == 1 else None

    def model(self, name: str | None = None) -> ModelResult:
        """The model called ``name`` (default: :attr:`best`)."""
        if name is None:
            best = self.best
            if best is None:
                raise KeyError("this study selected no model: name one of " + ", ".join(m.name for m in self.models))
            return best
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in this study; it has {', '.join(m.name for m in self.models)}")

    def rows(self) -> list[dict[str, Any]]:
        """The comparison table as one dict per model (keys = :data:`COLUMNS`, numbers unrounded)."""
        selection = self.selection
        best = selection.best if selection is not None else None
        return [model_row(m, selected=m.name == best, evidence=selection.candidate(m.name) if selection else None)
                for m in self.models]

    @property
    def table(self) -> Any:
        """The comparison table (the rows of ``comparison.csv``): a DataFrame with pandas, else a list of dicts."""
        rows = self.rows()
        pd = _pandas()
        return pd.DataFrame(rows, columns=list(COLUMNS)) if pd is not None else rows

    def confusion(self, model: str | None = None) -> Any:
        """The test confusion matrix of ``model`` (default: the best) with class labels: a DataFrame
        (index: true class, columns: predicted class) with pandas, else ``{true: {predicted: count}}``."""
        test = self.model(model).test
        pd = _pandas()
        if pd is not None:
            return pd.DataFrame(test.confusion_matrix, index=pd.Index(test.classes, name="true"),
                                columns=pd.Index(test.classes, name="predicted"))
        return {t: dict(zip(test.classes, row)) for t, row in zip(test.classes, test.confusion_matrix)}

    def errors(self, model: str | None = None) -> Any:
        """The misclassified test images of ``model`` (default: the best), most confident first:
        path, rel_path, true, predicted, confidence. A DataFrame with pandas, else a list of dicts."""
        columns = ["path", "rel_path", "true", "predicted", "confidence"]
        rows = [{c: getattr(e, c) for c in columns}
                for e in sorted(self.model(model).errors, key=lambda e: -e.confidence)]
        pd = _pandas()
        return pd.DataFrame(rows, columns=columns) if pd is not None else rows

    def model_path(self, model: str | None = None) -> Path:
        """The saved model directory of ``model`` (default: the best), for ``load_model``. A compare
        run records it relative to the run directory, an ``evaluate`` as it was given."""
        path = Path(self.model(model).model_dir)
        if self.selection is not None and self.run_dir is not None:
            return self.run_dir / path
        return path

    @property
    def report_path(self) -> Path | None:
        """``report.html`` of this run (None for a study not read from or written to a directory)."""
        return self.run_dir / REPORT_HTML_NAME if self.run_dir is not None else None

    def plot_paths(self) -> list[tuple[str, Path]]:
        """(caption, file) of every figure of the run that exists: the study's, then each model's."""
        if self.run_dir is None:
            return []
        found = [(key, self.run_dir / rel) for key, rel in self.plots.items()]
        for m in self.models:
            found += [(f"{m.name}: {key}", self.run_dir / rel) for key, rel in m.plots.items()]
        return [(caption, path) for caption, path in found if path.is_file()]

    def _repr_html_(self) -> str:
        """A notebook's view: the headline, the table and every figure (embedded, so the notebook
        keeps them when the run directory moves)."""
        best = self.best
        parts = [f"<h3>{html.escape(self.title)}</h3>"]
        if best is not None:
            parts.append(f"<p>{'Served model (chosen on the training and validation images)' if self.selection else 'Best model'}: "
                         f"<b>{html.escape(best.name)}</b>, test accuracy {best.test.accuracy:.1%} on "
                         f"{best.test.n} {html.escape(self.scored_set)}.</p>")
        head = "".join(f"<th>{html.escape(c)}</th>" for c in NOTEBOOK_COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(r[c]))}</td>" for c in NOTEBOOK_COLUMNS) + "</tr>"
                       for r in self.rows())
        parts.append(f'<table class="image-classifier-study"><thead><tr>{head}</tr></thead>'
                     f"<tbody>{body}</tbody></table>")
        if self.report_path is not None:
            parts.append(f"<p>Full report: <code>{html.escape(os.fspath(self.report_path))}</code></p>")
        for caption, path in self.plot_paths():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}" '
                         f'style="max-width:640px"><figcaption>{html.escape(caption)}</figcaption></figure>')
        return "\n".join(parts)
