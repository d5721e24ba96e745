"""What issue 14's trust features measure on a compare run, and what they cost.

    IMAGE_CLASSIFIER_WEIGHTS=../shared/weights .venv/bin/python bench/trust.py ../shared/datasets/athletes \\
        --unknown ../shared/datasets/unknown_people --out runs/bench-trust

Runs ``image-classifier compare DATA --unknown DIR --out OUT`` (unless ``--report-only``: then it
only reads OUT's ``metrics.json``) and prints, per model: the calibration temperature, test ECE and
log-loss before -> after (target ECE <= 0.05 after), the "none of these" numbers (AUROC of known test
images against the unknown folder, target >= 0.95 for the best model; unknowns accepted and known
accuracy at the kept fraction), and the shortcut audit's three accuracies against chance. Then the
seconds each trust step took (calibration + rejection fit, unknown scoring, Grad-CAM, audit,
ensemble) against the whole compare (target: <= 10 %).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The timings compare records for the trust features, and what each is.
TRUST_TIMINGS = {
    "trust_seconds": "calibration + rejection fit (one validation pass per model)",
    "open_set_seconds": "none-of-these measurement (unknown folder or leave-one-class-out)",
    "explain_seconds": "Grad-CAM of the misclassified test images",
    "shortcut_audit_seconds": "shortcut audit (3 extra passes over the test split)",
    "ensemble_seconds": "ensemble selection, saving and scoring (issue 19)",
}


def run_compare(data: Path, out: Path, unknown: Path | None, extra: list[str]) -> None:
    cli = "import sys; from image_classifier.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", cli, "compare", str(data), "--out", str(out), "--no-progress"]
    if unknown is not None:
        cmd += ["--unknown", str(unknown)]
    print("$", " ".join(cmd + extra), flush=True)
    subprocess.run(cmd + extra, check=True)


def fmt(x: Any, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def model_rows(metrics: dict[str, Any]) -> list[str]:
    best = (metrics.get("selection") or {}).get("best")
    lines = ["| model | test acc | T | ECE before → after | log-loss before → after | unknown AUROC | "
             "unknowns accepted | known kept / acc kept | face masked | only face | greyscale | chance |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in metrics["models"]:
        test = m["test"]
        cal = m.get("calibration") or {}
        temperature = fmt(cal.get("temperature"), ".2f")
        if cal.get("face_temperature") is not None:
            temperature += f" / face {cal['face_temperature']:.2f}"
        o = m.get("open_set") or {}
        a = m.get("shortcut") or {}
        chance = max(a["chance_uniform"], a["chance_majority"]) if a else None
        name = m["name"] + (" (best)" if m["name"] == best else "")
        lines.append(
            f"| {name} | {fmt(test.get('accuracy'))} | {temperature} | {fmt(test.get('ece_uncalibrated'))} → "
            f"{fmt(test.get('ece'))} | {fmt(test.get('log_loss_uncalibrated'))} → {fmt(test.get('log_loss'))} | "
            f"{fmt(o.get('auroc'))} | {fmt(o.get('unknown_accept_rate'))} | {fmt(o.get('known_kept_rate'))} / "
            f"{fmt(o.get('known_accuracy_kept'))} | {fmt(a.get('face_masked'))} | {fmt(a.get('face_only'))} | "
            f"{fmt(a.get('greyscale'))} | {fmt(chance)} |")
    methods = sorted({(m.get("open_set") or {}).get("method") for m in metrics["models"]} - {None})
    lines.append(f"\nnone-of-these measured by: {', '.join(methods) or 'not measured'}")
    return lines


def cost_rows(timings: dict[str, float]) -> list[str]:
    total = timings.get("total_seconds")
    lines = ["| step | seconds | share of compare |", "|---|---|---|"]
    spent = 0.0
    for key, what in TRUST_TIMINGS.items():
        seconds = timings.get(key)
        if seconds is None:
            continue
        spent += seconds
        lines.append(f"| {what} | {seconds:.1f} | {fmt(seconds / total if total else None, '.1%')} |")
    lines.append(f"| all of it | {spent:.1f} | {fmt(spent / total if total else None, '.1%')} |")
    lines.append(f"| the whole compare | {fmt(total, '.0f')} | 100 % |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-trust"))
    ap.add_argument("--unknown", type=Path, default=None, help="a folder of images of none of the classes")
    ap.add_argument("--report-only", action="store_true", help="read OUT's metrics.json, run nothing")
    ap.add_argument("extra", nargs="*", help="more compare options, after --")
    args = ap.parse_args()
    if not args.report_only:
        run_compare(args.data, args.out, args.unknown, args.extra)
    metrics = json.loads((args.out / "metrics.json").read_text())
    print("\n".join(model_rows(metrics)))
    print()
    print("\n".join(cost_rows(metrics.get("timings") or {})))


if __name__ == "__main__":
    main()
