"""``compare``'s ensemble step: greedy selection on the validation split, then, when the mix beats
the best single model, a saved ensemble scored on the test split once like every model.

Honesty: only the validation probabilities (one pass per model, decoded images shared through the
run's :class:`~image_classifier.evaluate.evaluation.DecodeCache`) decide the members and weights;
the test split is scored after the choice and never feeds back. The ensemble is kept only when it
lowers the best single model's validation log-loss with two members or more; it becomes the run's
``best`` when it beats the model chosen on validation by the study's rule (validation accuracy,
then loss), both measured on the same validation pass.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from image_classifier.evaluate.ensemble_selection import (
    DEFAULT_MAX_STEPS, EnsembleSelection, accuracy, finite, greedy_selection, log_loss,
)
from image_classifier.evaluate.evaluation import (
    DecodeCache, Evaluation, LabelledImage, evaluate_classifier, label_indices, predict_items,
)
from image_classifier.evaluate.open_set import UnknownImage, measure_unknown_folder
from image_classifier.evaluate.speed import SpeedConfig, measure_classifier
from image_classifier.inference.ensemble import write_ensemble
from image_classifier.inference.loading import load_model
from image_classifier.inference.rejection import DEFAULT_KEEP, RejectionRule
from image_classifier.results import EnsembleInfo, EnsembleMember, ModelResult, Speed, Training, Validation
from image_classifier.runs import CARD_NAME, ensemble_dir_for
from image_classifier.trust.rejection import fit_ensemble_rejection

log = logging.getLogger(__name__)

#: The ensemble's row in the comparison (and its model directory's name: ``models/ensemble``).
ENSEMBLE_ROW = "ensemble"


@dataclass
class ValidationProbabilities:
    """Each model's probabilities on the validation images (rows: the images every model read)."""

    probs: dict[str, np.ndarray]
    labels: np.ndarray
    seconds: float = 0.0

    @property
    def images(self) -> int:
        return len(self.labels)


def validation_pass(classifier: object, items: Sequence[LabelledImage], cache: DecodeCache
                    ) -> tuple[np.ndarray, list[int]]:
    """One model's probabilities on the validation images (decoding shared through ``cache``)."""
    probs, kept, _ = predict_items(classifier, items, cache=cache)
    return probs, kept


def align(passes: dict[str, tuple[np.ndarray, list[int]]], classes: Sequence[str],
          items: Sequence[LabelledImage], seconds: float = 0.0) -> ValidationProbabilities:
    """Keep the images every model read (all of them, unless one could not be decoded)."""
    common = sorted(set.intersection(*(set(kept) for _, kept in passes.values()))) if passes else []
    probs = {}
    for name, (p, kept) in passes.items():
        row = {i: r for r, i in enumerate(kept)}
        probs[name] = np.asarray(p)[[row[i] for i in common]]
    labels = label_indices(classes, items)[common] if common else np.empty(0, dtype=np.int64)
    return ValidationProbabilities(probs, labels, seconds)


def member_latency(entry: ModelResult) -> float | None:
    """A model's single-image latency as ``compare`` measured it: the whole ``predict`` path (file to
    probabilities) where measured, else the forward pass alone."""
    speed = entry.speed or Speed()
    return speed.e2e_latency_ms_p50 if speed.e2e_latency_ms_p50 is not None else speed.latency_ms_p50


def select(val: ValidationProbabilities, latencies: dict[str, float | None], max_latency_ms: float | None,
           max_steps: int = DEFAULT_MAX_STEPS) -> tuple[EnsembleSelection | None, EnsembleInfo]:
    """Greedy selection within the latency budget, and the info the report shows (outcome set to
    "kept" when worth keeping; the caller may still change it)."""
    def allowed(chosen: frozenset[str]) -> bool:
        if max_latency_ms is None:
            return True
        values = [latencies.get(n) for n in chosen]
        return all(v is not None for v in values) and sum(values) <= max_latency_ms  # type: ignore[arg-type]

    selection = greedy_selection(val.probs, val.labels, max_steps=max_steps, allowed=allowed)
    members = [EnsembleMember(n, selection.weights[n] if selection else 0.0, finite(log_loss(p, val.labels)),
                              finite(accuracy(p, val.labels)), latencies.get(n)) for n, p in val.probs.items()]
    singles = {m.name: m for m in members}
    best_single = min(members, key=lambda m: (m.val_log_loss if m.val_log_loss is not None else float("inf")))
    info = EnsembleInfo(outcome="over_budget", members=members, val_images=val.images, max_latency_ms=max_latency_ms,
                        best_single=best_single.name, best_single_val_log_loss=best_single.val_log_loss,
                        best_single_val_accuracy=best_single.val_accuracy, seconds=val.seconds)
    if selection is None:
        return None, info
    info.steps = selection.steps
    info.val_log_loss = finite(selection.log_loss)
    info.val_accuracy = finite(selection.accuracy)
    chosen = [singles[n] for n in selection.members]
    lat = [m.latency_ms for m in chosen]
    info.member_latency_ms = sum(lat) if all(v is not None for v in lat) else None  # type: ignore[arg-type]
    info.outcome = "kept" if selection.improves else ("single" if len(selection.members) < 2 else "lost")
    return selection, info


@dataclass
class EnsembleOutcome:
    info: EnsembleInfo | None = None  # None: not tried
    entry: ModelResult | None = None  # its row, when kept
    evaluation: Evaluation | None = None
    is_best: bool = False  # better on validation than the model chosen alone
    speed_seconds: float = 0.0  # timing the kept ensemble (the study counts it with the other models')
    rejection_seconds: float = 0.0  # fitting its "none of these" rule on the validation split
    open_set_seconds: float = 0.0  # measuring that rule on the unknown folder


def remove_stale(run_dir: Path) -> None:
    """A previous run's ensemble, when this run keeps none (so ``serve`` does not offer it)."""
    card = ensemble_dir_for(run_dir) / CARD_NAME
    if card.is_file():
        card.unlink()
        try:
            card.parent.rmdir()
        except OSError:
            pass


def run_ensemble_step(*, run_dir: Path, model_dirs: dict[str, Path], val: ValidationProbabilities,
                      entries: Sequence[ModelResult], selected: str, test_items: Sequence[LabelledImage],
                      cache: DecodeCache, max_latency_ms: float | None, speed: SpeedConfig, n_bootstrap: int,
                      seed: int, say: Callable[[str], None], val_items: Sequence[LabelledImage] = (),
                      keep: float = DEFAULT_KEEP, unknowns: Sequence[UnknownImage] | None = None,
                      unknown_source: str | None = None) -> EnsembleOutcome:
    """Select on ``val``; when worth keeping, save ``models/ensemble``, score it on ``test_items``
    (once) and measure it. ``selected`` is the model the study chose alone (its rule: validation
    accuracy, then loss); the outcome's ``is_best`` says whether the ensemble replaces it.

    "None of these": with ``val_items`` (the validation images ``val`` was computed on) the saved
    ensemble's rule is fitted on them for ``keep`` (one pass, decoding shared through ``cache``),
    before the test split is read; with ``unknowns`` (``compare --unknown``) it is measured on them
    like every model's. Leave-one-class-out is not measured for the ensemble (its row's
    ``open_set`` stays None): it needs one network's features, and an ensemble has several."""
    t0 = time.perf_counter()
    latencies = {m.name: member_latency(m) for m in entries}
    selection, info = select(val, latencies, max_latency_ms)
    info.seconds += time.perf_counter() - t0
    mix = ", ".join(f"{m.name} {m.weight:.2f}" for m in info.chosen)
    if not info.kept or selection is None:
        remove_stale(run_dir)
        say(f"ensemble: tried, not kept ({info.outcome}): validation log-loss {_num(info.val_log_loss)} "
            f"[{mix}] vs {_num(info.best_single_val_log_loss)} for {info.best_single} alone")
        return EnsembleOutcome(info)
    out = ensemble_dir_for(run_dir)
    write_ensemble(out, {m.name: model_dirs[m.name] for m in entries}, selection.weights, extra={
        "method": "greedy selection with replacement (Caruana et al. 2004)", "fitted_on": "validation",
        "metric": "log_loss", "steps": selection.steps, "images": val.images,
        "val_log_loss": info.val_log_loss, "val_accuracy": info.val_accuracy},
        best={"val_accuracy": info.val_accuracy, "val_loss": info.val_log_loss, "epoch": None})
    info.name = ENSEMBLE_ROW
    info.model_dir = os.path.relpath(out, run_dir)
    say(f"ensemble: {mix}; validation log-loss {_num(info.val_log_loss)} vs {_num(info.best_single_val_log_loss)} "
        f"({info.best_single} alone), accuracy {_num(info.val_accuracy)}; scoring it on {len(test_items)} test images")
    # Evaluated on PyTorch like every other row (the test numbers are the models', not a backend's).
    ensemble = load_model(out, backend="torch")
    rejection_seconds = 0.0
    if val_items:
        t2 = time.perf_counter()
        entry_rule = fit_ensemble_rejection(ensemble, val_items, keep, cache)
        rejection_seconds = time.perf_counter() - t2
        if entry_rule is not None:
            say(f"ensemble: none of these, {RejectionRule.from_card(entry_rule).describe()} "  # type: ignore[union-attr]
                f"({rejection_seconds:.1f} s)")
    ev = evaluate_classifier(ensemble, test_items, cache=cache, n_bootstrap=n_bootstrap, seed=seed)
    open_set = None
    open_set_seconds = 0.0
    if unknowns is not None:
        t2 = time.perf_counter()
        open_set = measure_unknown_folder(ensemble, ev.probs, [p.details for p in ev.predictions], ev.correct,
                                          unknowns, cache=cache, source=unknown_source)
        open_set_seconds = time.perf_counter() - t2
    for _, clf, _ in ensemble.members:
        if clf.face_path is not None:
            clf.face_path.cache = None  # time the face pipeline itself, not a cache hit
    sample = test_items[0].path
    t1 = time.perf_counter()
    measured = Speed.from_json(measure_classifier(ensemble, model_dir=out, sample_image=sample, config=speed))
    speed_seconds = time.perf_counter() - t1
    by_name = {m.name: m for m in entries}
    chosen = [by_name[m.name] for m in info.chosen]
    seconds = [m.training.seconds for m in chosen]
    entry = ModelResult(
        name=ENSEMBLE_ROW, family="ensemble", model_dir=info.model_dir,
        validation=Validation(info.val_accuracy, info.val_log_loss, None), test=ev.metrics, speed=measured,
        training=Training(sum(seconds) if all(s is not None for s in seconds) else None),  # type: ignore[arg-type]
        errors=ev.errors, skipped=ev.skipped, open_set=open_set,
    )
    # The study's rule (validation accuracy, then loss), on this one validation pass for every
    # model alike: the ensemble is best only when it beats each model alone, the selected one included.
    ours = (selection.accuracy, -selection.log_loss)
    is_best = selected in val.probs and all(ours > (accuracy(p, val.labels), -log_loss(p, val.labels))
                                            for p in val.probs.values())
    return EnsembleOutcome(info, entry, ev, is_best, speed_seconds, rejection_seconds, open_set_seconds)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
