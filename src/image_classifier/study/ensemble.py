"""``compare``'s composites: the weighted mix of the models and the face-first cascades are
candidates of the choice (:mod:`image_classifier.study.evidence`); the one chosen to be served is
saved as ``models/ensemble`` and scored on the test split once, like every model.

Honesty: the mix's weights are chosen by greedy selection on the validation images, and its
validation estimate is cross-fitted (each image mixed with weights chosen on the others); a cascade
has nothing to fit. The test split is scored after the choice and never feeds back.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from image_classifier.evaluate.choice import Candidate
from image_classifier.evaluate.evaluation import DecodeCache, Evaluation, LabelledImage, evaluate_classifier
from image_classifier.evaluate.rejection import UnknownImage, measure_unknown_folder
from image_classifier.evaluate.speed import SpeedConfig, measure_classifier
from image_classifier.inference.ensemble import write_ensemble
from image_classifier.inference.loading import load_model
from image_classifier.inference.rejection import DEFAULT_KEEP, RejectionRule
from image_classifier.results import EnsembleInfo, EnsembleMember, ModelResult, Speed, Training, Validation
from image_classifier.runs import CARD_NAME, ensemble_dir_for
from image_classifier.study.evidence import Composite, Evidence
from image_classifier.trust.rejection import fit_ensemble_rejection

log = logging.getLogger(__name__)

#: The weighted mix's candidate name (and its row when it is served).
ENSEMBLE_ROW = "ensemble"


def member_latency(entry: ModelResult) -> float | None:
    """A model's single-image latency as ``compare`` measured it: the whole ``predict`` path (file to
    probabilities) where measured, else the forward pass alone."""
    speed = entry.speed or Speed()
    return speed.e2e_latency_ms_p50 if speed.e2e_latency_ms_p50 is not None else speed.latency_ms_p50


def composite_latency(composite: Composite, latencies: dict[str, float | None]) -> float | None:
    """The members' measured latencies summed (None when one was not measured)."""
    values = [latencies.get(n) for n, w in composite.weights.items() if w > 0]
    return sum(values) if all(v is not None for v in values) else None  # type: ignore[arg-type]


def over_budget(evidence: Evidence, latencies: dict[str, float | None], max_latency_ms: float | None) -> list[str]:
    """The composites whose members' latencies add up to more than ``--ensemble-max-latency``."""
    if max_latency_ms is None:
        return []
    out = []
    for name, c in evidence.composites.items():
        total = composite_latency(c, latencies)
        if total is None or total > max_latency_ms:
            out.append(name)
    return out


def mix_info(evidence: Evidence, latencies: dict[str, float | None], max_latency_ms: float | None,
             excluded: Sequence[str], served_dir: str | None) -> EnsembleInfo:
    """What the report says of the weighted mix: its members and weights, its cross-fitted
    validation numbers, and whether it is served (``served_dir``: where, relative to the run)."""
    by_name = {c.name: c for c in evidence.candidates}
    singles = [c for c in evidence.candidates if c.kind == "model"]
    mix = evidence.composites.get(ENSEMBLE_ROW)
    weights = mix.weights if mix is not None else {}
    members = [EnsembleMember(c.name, weights.get(c.name, 0.0), c.val_log_loss, c.val_accuracy, latencies.get(c.name))
               for c in singles]
    best_single = min(singles, key=lambda c: c.val_log_loss)
    info = EnsembleInfo(outcome="single", members=members, val_images=len(evidence.val_items),
                        max_latency_ms=max_latency_ms, best_single=best_single.name,
                        best_single_val_log_loss=best_single.val_log_loss,
                        best_single_val_accuracy=best_single.val_accuracy)
    if mix is None:
        return info
    candidate = by_name[ENSEMBLE_ROW]
    info.val_log_loss, info.val_accuracy = candidate.val_log_loss, candidate.val_accuracy
    info.member_latency_ms = composite_latency(mix, latencies)
    info.name = ENSEMBLE_ROW
    if ENSEMBLE_ROW in excluded:
        info.outcome = "over_budget"
    else:
        info.outcome = "kept" if evidence.choice.chosen == ENSEMBLE_ROW else "not_chosen"
        info.model_dir = served_dir if info.outcome == "kept" else None
    return info


@dataclass
class EnsembleOutcome:
    entry: ModelResult | None = None  # the served composite's row
    evaluation: Evaluation | None = None
    speed_seconds: float = 0.0  # timing it (the study counts it with the other models')
    rejection_seconds: float = 0.0  # fitting its "none of these" rule on the validation split
    open_set_seconds: float = 0.0  # measuring that rule on the unknown folder


def remove_stale(run_dir: Path) -> None:
    """A previous run's composite, when this run serves none (so ``serve`` does not offer it)."""
    card = ensemble_dir_for(run_dir) / CARD_NAME
    if card.is_file():
        card.unlink()
        try:
            card.parent.rmdir()
        except OSError:
            pass


def save_and_score(*, run_dir: Path, composite: Composite, candidate: Candidate, model_dirs: dict[str, Path],
                   entries: Sequence[ModelResult], test_items: Sequence[LabelledImage], cache: DecodeCache,
                   speed: SpeedConfig, say: Callable[[str], None],
                   val_items: Sequence[LabelledImage], keep: float = DEFAULT_KEEP,
                   unknowns: Sequence[UnknownImage] | None = None, unknown_source: str | None = None,
                   device: str = "auto") -> EnsembleOutcome:
    """Save the chosen ``composite`` as ``models/ensemble``, fit its "none of these" rule on the
    validation images, then score it on ``test_items`` once and time it."""
    out = ensemble_dir_for(run_dir)
    members = {n: model_dirs[n] for n in composite.weights}
    write_ensemble(out, members, composite.weights, combine=composite.method, extra={
        "name": composite.name, "description": composite.description, "fitted_on": "validation",
        "method": ("greedy selection with replacement (Caruana et al. 2004)" if composite.method == "mean"
                   else "face-first cascade"),
        "images": len(candidate.val_correct), "val_log_loss": candidate.val_log_loss,
        "val_accuracy": candidate.val_accuracy},
        best={"val_accuracy": candidate.val_accuracy, "val_loss": candidate.val_log_loss, "epoch": None})
    model_dir = os.path.relpath(out, run_dir)
    say(f"{composite.name}: {composite.description}; scoring it on {len(test_items)} test images")
    # Evaluated on PyTorch like every other row (the test numbers are the models', not a backend's).
    ensemble = load_model(out, backend="torch", device=device)
    t2 = time.perf_counter()
    entry_rule = fit_ensemble_rejection(ensemble, val_items, keep, cache)
    rejection_seconds = time.perf_counter() - t2
    if entry_rule is not None:
        say(f"{composite.name}: none of these, {RejectionRule.from_card(entry_rule).describe()} "  # type: ignore[union-attr]
            f"({rejection_seconds:.1f} s)")
    ev = evaluate_classifier(ensemble, test_items, cache=cache)
    open_set = None
    open_set_seconds = 0.0
    if unknowns is not None:
        t2 = time.perf_counter()
        open_set = measure_unknown_folder(ensemble, ev.probs, [p.details for p in ev.predictions], ev.correct,
                                          unknowns, cache=cache, source=unknown_source)
        open_set_seconds = time.perf_counter() - t2
    t1 = time.perf_counter()
    measured = Speed.from_json(measure_classifier(ensemble.for_timing(), sample_image=test_items[0].path,
                                                  config=speed))
    speed_seconds = time.perf_counter() - t1
    by_name = {m.name: m for m in entries}
    seconds = [by_name[n].training.seconds for n in composite.weights if n in by_name]
    entry = ModelResult(
        name=composite.name, family="ensemble", model_dir=model_dir,
        validation=Validation(candidate.val_accuracy, candidate.val_log_loss, None), test=ev.metrics, speed=measured,
        training=Training(sum(seconds) if all(s is not None for s in seconds) else None),  # type: ignore[arg-type]
        errors=ev.errors, skipped=ev.skipped, open_set=open_set,
    )
    return EnsembleOutcome(entry, ev, speed_seconds, rejection_seconds, open_set_seconds)
