"""Issue 25: which model compare serves, over split seeds, against the rule it replaced.

    IMAGE_CLASSIFIER_WEIGHTS=../shared/weights .venv/bin/python bench/selection.py \\
        ../shared/datasets/athletes ../shared/datasets/lfw_people12 --seeds 0-4 --runs runs/selection

For each folder and seed it runs ``image-classifier compare DATA --seed S --out RUNS/<folder>-s<S>``
with the default models (a run directory that already holds the trained models reuses them, as
compare always does: only the choice, the scoring and the report run again; ``--report-only``
runs nothing and reads what is there). Then, per seed, for the model compare serves and for the
one the old rule would have served:

* its test accuracy (the test split, scored once by compare);
* the strangers it accepts: the test half of ``--strangers`` (default ``../shared/datasets/unknown_people``,
  the half compare would keep for the test side of ``--unknown``, so never one the choice saw),
  by its own "none of these" rule, and at the threshold that keeps 95 % of the known test images
  (the rule's score, so every model is compared at one operating point).

The old rule (main before issue 25): the single model with the highest validation accuracy (ties:
lower validation loss, then the order given), replaced by the greedy ensemble (Caruana et al.,
from one model, with replacement) when that lowered the validation log-loss and beat every model
alone on validation accuracy, then log-loss. It is recomputed here from the same trained models.

Prints a Markdown table per folder, the means over seeds, and what the new evidence cost:
``selection_seconds`` (cross-validation, leave-one-class-out, composites, the choice) against the
whole compare.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from image_classifier.evaluate.evaluation import LabelledImage, label_indices
from image_classifier.evaluate.rejection import split_unknowns, unknown_images
from image_classifier.inference.ensemble import write_ensemble
from image_classifier.inference.loading import load_model
from image_classifier.runs import BEST_NAME, METRICS_NAME, SPLIT_NAME
from image_classifier.saved_model import read_card
from image_classifier.trust.rejection import fit_ensemble_rejection

KEPT = 0.95  # the known share kept at the common operating point


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def run_compare(data: Path, out: Path, seed: int, extra: list[str]) -> None:
    cli = "import sys; from image_classifier.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", cli, "compare", str(data), "--seed", str(seed), "--out", str(out), "--no-progress",
           *extra]
    print("$", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)


def split_items(run: Path, data: Path, subset: str) -> list[LabelledImage]:
    with (run / SPLIT_NAME).open() as fh:
        return [LabelledImage(data / r["rel_path"], r["rel_path"], r["class"]) for r in csv.DictReader(fh)
                if r["split"] == subset]


# ---- the old rule ----------------------------------------------------------------------------------

def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))))


def _accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(p.argmax(1) == y))


def old_greedy(probs: dict[str, np.ndarray], y: np.ndarray, max_steps: int = 20) -> dict[str, float]:
    """main's greedy ensemble selection before issue 25 (with replacement, from the best single model)."""
    names = list(probs)
    singles = {n: _log_loss(probs[n], y) for n in names}
    first = min(names, key=lambda n: (singles[n], names.index(n)))
    counts = {n: 0 for n in names}
    counts[first] = 1
    total, current, steps = probs[first].copy(), singles[first], 1
    while steps < max_steps:
        best_name, best_loss = None, current
        for n in names:
            loss = _log_loss((total + probs[n]) / (steps + 1), y)
            if loss < best_loss - 1e-9:
                best_name, best_loss = n, loss
        if best_name is None:
            break
        counts[best_name] += 1
        total += probs[best_name]
        steps += 1
        current = best_loss
    return {n: c / steps for n, c in counts.items()}


def old_choice(run: Path, data: Path, models: list[str]) -> tuple[str, dict[str, float] | None]:
    """(the model the old rule serves, the ensemble's weights when it is the ensemble)."""
    dirs = {m: run / "models" / m for m in models}
    best = {m: read_card(d).best for m, d in dirs.items()}
    single = min(enumerate(models), key=lambda im: (-best[im[1]]["val_accuracy"], best[im[1]]["val_loss"], im[0]))[1]
    val = split_items(run, data, "val")
    probs = {}
    for m, d in dirs.items():
        clf = load_model(d, backend="torch")
        probs[m] = np.asarray(clf.predict_proba([it.path for it in val]), dtype=np.float64)
        classes = clf.classes
    y = label_indices(classes, val)
    weights = old_greedy(probs, y)
    members = [n for n, w in weights.items() if w > 0]
    mixed = sum(w * probs[n] for n, w in weights.items() if w > 0)
    singles = {n: _log_loss(p, y) for n, p in probs.items()}
    kept = len(members) >= 2 and _log_loss(mixed, y) < min(singles.values()) - 1e-9
    ours = (_accuracy(mixed, y), -_log_loss(mixed, y))
    if kept and all(ours > (_accuracy(p, y), -_log_loss(p, y)) for p in probs.values()):
        return "ensemble", weights
    return single, None


# ---- measuring a served model ------------------------------------------------------------------------

def _key(detail: dict[str, Any]) -> tuple[float, float]:
    """How known an image looks to its rule: the rule's score (a p-value or a probability), ties
    broken by the raw value (oriented: a smaller face distance is more known). p-values bottom out
    at 0 for everything stranger than every validation image; the raw value still orders those."""
    r = detail["rejection"]
    return (float(r["score"]), -float(r["value"]) if r["kind"] == "face_distance" else float(r["value"]))


def measure(classifier: Any, known: list[LabelledImage], strangers: list[Any]) -> dict[str, float]:
    """Test accuracy, and the strangers accepted by the rule and at the threshold keeping 95 % of
    the known test images (the same operating point for every model)."""
    kp, kd = classifier.predict_details([it.path for it in known])
    sp, sd = classifier.predict_details([u.path for u in strangers])
    y = label_indices(classifier.classes, known)
    ks = sorted(_key(d) for d in kd)
    threshold = ks[int(np.floor((1 - KEPT) * len(ks)))]
    return {"accuracy": float(np.mean(kp.argmax(1) == y)),
            "strangers_rule": float(np.mean([not d["unknown"] for d in sd])),
            "known_kept_rule": float(np.mean([not d["unknown"] for d in kd])),
            "strangers_at_95": float(np.mean([_key(d) >= threshold for d in sd])),
            "known_kept_at_95": float(np.mean([_key(d) >= threshold for d in kd]))}


def old_served(run: Path, data: Path, models: list[str], name: str, weights: dict[str, float] | None,
               tmp: Path) -> Any:
    if weights is None:
        return load_model(run / "models" / name, backend="torch")
    out = write_ensemble(tmp / "old-ensemble", {m: run / "models" / m for m in models}, weights)
    ens = load_model(out, backend="torch")
    fit_ensemble_rejection(ens, split_items(run, data, "val"))
    return ens


def bench_seed(data: Path, run: Path, seed: int, strangers_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run / METRICS_NAME).read_text())
    models = [m["name"] for m in metrics["models"] if m.get("family") != "ensemble"]
    strangers = split_unknowns(unknown_images(strangers_dir), seed)[1]  # the test half
    known = split_items(run, data, "test")
    selection = metrics["selection"]
    new = measure(load_model(run / BEST_NAME, backend="torch"), known, strangers)
    old_name, weights = old_choice(run, data, models)
    with tempfile.TemporaryDirectory() as tmp:
        old = measure(old_served(run, data, models, old_name, weights, Path(tmp)), known, strangers)
    timings = metrics.get("timings") or {}
    return {"seed": seed, "new": selection["best"], "new_m": new, "old": old_name, "old_m": old,
            "reason": selection.get("reason", ""), "selection_seconds": timings.get("selection_seconds"),
            "total_seconds": timings.get("total_seconds"), "strangers": len(strangers)}


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def report(name: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n### {name}\n")
    print("| seed | served | test acc | strangers accepted: rule (known kept) / at 95 % kept | old rule served "
          "| test acc | strangers accepted: rule (known kept) / at 95 % kept | evidence s / compare s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        n, o = r["new_m"], r["old_m"]
        cost = (f"{r['selection_seconds']:.0f} / {r['total_seconds']:.0f} "
                f"({100 * r['selection_seconds'] / r['total_seconds']:.1f} %)"
                if r["selection_seconds"] is not None and r["total_seconds"] else "–")
        print(f"| {r['seed']} | {r['new']} | {n['accuracy']:.3f} | {pct(n['strangers_rule'])} "
              f"({pct(n['known_kept_rule'])}) / {pct(n['strangers_at_95'])} | {r['old']} | {o['accuracy']:.3f} | "
              f"{pct(o['strangers_rule'])} ({pct(o['known_kept_rule'])}) / {pct(o['strangers_at_95'])} | {cost} |")
    mean = lambda side, key: float(np.mean([r[side][key] for r in rows]))  # noqa: E731
    print(f"\nmean over {len(rows)} seeds: served test accuracy {mean('new_m', 'accuracy'):.3f} "
          f"(old rule {mean('old_m', 'accuracy'):.3f}); strangers accepted at 95 % kept: max "
          f"{max(r['new_m']['strangers_at_95'] for r in rows):.3f} (old rule max "
          f"{max(r['old_m']['strangers_at_95'] for r in rows):.3f}); by the rule: max "
          f"{max(r['new_m']['strangers_rule'] for r in rows):.3f} (old {max(r['old_m']['strangers_rule'] for r in rows):.3f}); "
          f"{rows[0]['strangers']} strangers per seed")
    for r in rows:
        print(f"- seed {r['seed']}: {r['reason']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Options after -- go to compare as they are (e.g. -- --no-export).")
    ap.add_argument("data", type=Path, nargs="+", help="class folders of people (e.g. the athletes, lfw_people12)")
    ap.add_argument("--seeds", default="0-4", help="split seeds: 0-4 or 0,2,3 (default 0-4)")
    ap.add_argument("--runs", type=Path, default=Path("runs/selection"), help="where the run directories go")
    ap.add_argument("--strangers", type=Path, default=Path("../shared/datasets/unknown_people"),
                    help="photos of none of the people (their test half is measured)")
    ap.add_argument("--report-only", action="store_true", help="run nothing: read the run directories")
    argv = sys.argv[1:] if argv is None else argv
    # Everything after "--" goes to compare as it is (e.g. -- --no-export).
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    for data in args.data:
        rows = []
        for seed in seeds_of(args.seeds):
            run = args.runs / f"{data.resolve().name}-s{seed}"
            if not args.report_only:
                run_compare(data, run, seed, extra)
            rows.append(bench_seed(data, run, seed, args.strangers))
        report(data.resolve().name, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
