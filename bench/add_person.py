"""Adding a person to a face model with ``image-classifier add`` (issue 27): is the new person
recognised, do the others keep their answers, and how long does it take?

    .venv/bin/python bench/add_person.py athletes MODEL_DIR [--people all|NAME,...] [--photos 5] [--out add.json]
    .venv/bin/python bench/add_person.py heldout [--people all|NAME,...] [--photos 5] [--models DIR] [--out heldout.json]

* **athletes MODEL_DIR**: MODEL_DIR is a face model trained on ``../shared/datasets/athletes`` (its
  ``split.csv`` beside it). Each person of ``../shared/datasets/lfw_people12`` in turn is added to it
  from ``--photos`` of their photos (chosen with seed 0), each time a new model directory made by the
  command itself (``python -m image_classifier add``, its wall time from process start to exit).
  Reported: the share of the person's *other* photos the new model names them (``unknown`` and
  other names count as misses), the athletes' accuracy on the model's test split before and after
  (and how many test answers changed), and the share of the 150 strangers of
  ``../shared/datasets/unknown_people`` answered ``unknown`` before and after.
* **heldout**: for each person of lfw_people12, a face model is trained on the other 11 (a folder of
  symlinks under ``--models``, default /tmp/photos-models; models already there are reused) and the
  person is added back from ``--photos`` photos; the same numbers, with the 11 people's test split.

Every model trains with the tool's defaults and ``IMAGE_CLASSIFIER_WEIGHTS=../shared/weights``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LFW = SHARED / "datasets" / "lfw_people12"
STRANGERS = SHARED / "datasets" / "unknown_people"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "IMAGE_CLASSIFIER_WEIGHTS": str(SHARED / "weights")}


def chosen_photos(person: Path, n: int) -> tuple[list[Path], list[Path]]:
    """(the ``n`` photos to add the person from, the others), chosen with seed 0."""
    photos = sorted(person.iterdir())
    order = np.random.default_rng(0).permutation(len(photos))
    return [photos[i] for i in sorted(order[:n])], [photos[i] for i in sorted(order[n:])]


def test_split(model_dir: Path) -> list[tuple[Path, str]]:
    """The model's test photos and their classes, from the split.csv ``train`` keeps beside it (a
    model ``compare`` trained, whose card does not name its data folder: the athletes')."""
    card = json.loads((model_dir / "model.json").read_text())
    root = Path(card["args"].get("data") or SHARED / "datasets" / "athletes")
    with open(model_dir / "split.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    return [(root / r["rel_path"], r["class"]) for r in rows]


def add_one(model_dir: Path, person: Path, n: int, work: Path, known_test: list[tuple[Path, str]]) -> dict:
    import image_classifier as ic
    from image_classifier.faces import FaceCache
    from image_classifier.training.cache import default_cache_dir

    given, others = chosen_photos(person, n)
    folder = work / f"{person.name}-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for p in given:
        (folder / p.name).symlink_to(p)
    out = work / f"model-with-{person.name}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "image_classifier", "add", str(model_dir), str(folder),
                          "--name", person.name, "--out", str(out)], capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"add failed for {person.name}:\n{run.stderr[-3000:]}")
    cache = FaceCache(default_cache_dir())
    before = ic.load_model(model_dir, backend="torch", face_cache=cache)
    after = ic.load_model(out, backend="torch", face_cache=cache)
    named = after.predict(others)
    paths = [p for p, _ in known_test]
    truth = [c for _, c in known_test]
    b, a = before.predict(paths), after.predict(paths)
    strangers = sorted(STRANGERS.iterdir())
    sb, sa = before.predict(strangers), after.predict(strangers)
    card = json.loads((out / "model.json").read_text())
    return {
        "person": person.name, "photos_given": n, "other_photos": len(others),
        "recognised": float(np.mean([x == person.name for x in named])),
        "other_answers": {k: named.count(k) for k in sorted(set(named)) if k != person.name},
        "validation": card["added"][-1]["validation"], "validation_recognised": card["added"][-1]["validation_recognised"],
        "known_test_images": len(paths),
        "known_correct_before": int(sum(x == t for x, t in zip(b, truth))),
        "known_correct_after": int(sum(x == t for x, t in zip(a, truth))),
        "known_changed": int(sum(x != y for x, y in zip(a, b))),
        "strangers_unknown_before": float(np.mean([x == "unknown" for x in sb])),
        "strangers_unknown_after": float(np.mean([x == "unknown" for x in sa])),
        "strangers_named_new_person": int(sum(x == person.name for x in sa)),
        "add_seconds": round(seconds, 2), "refit_seconds": card["added"][-1]["seconds"],
    }


def heldout_model(person: str, models: Path) -> Path:
    """A face model trained on lfw_people12 without ``person`` (trained here unless already there)."""
    data = models / "data" / f"lfw11-minus-{person}"
    model = models / f"lfw11-minus-{person}"
    if (model / "model.json").is_file():
        return model
    data.mkdir(parents=True, exist_ok=True)
    for d in sorted(LFW.iterdir()):
        if d.name != person and not (data / d.name).exists():
            (data / d.name).symlink_to(d)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "image_classifier", "train", str(data), "--arch", "face_embedding",
                          "--out", str(model), "--no-progress"], capture_output=True, text=True, env=_env())
    if run.returncode != 0:
        raise SystemExit(f"training without {person} failed:\n{run.stderr[-3000:]}")
    print(f"  trained without {person} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return model


def people(text: str) -> list[Path]:
    everyone = sorted(p for p in LFW.iterdir() if p.is_dir())
    if text == "all":
        return everyone
    wanted = [w.strip() for w in text.split(",")]
    return [p for p in everyone if p.name in wanted]


def summary(rows: list[dict]) -> dict:
    return {"people": len(rows), "recognised_min": min(r["recognised"] for r in rows),
            "recognised_median": statistics.median(r["recognised"] for r in rows),
            "people_at_least_90": sum(r["recognised"] >= 0.9 for r in rows),
            "known_lost_max": max(r["known_correct_before"] - r["known_correct_after"] for r in rows),
            "add_seconds_median": statistics.median(r["add_seconds"] for r in rows),
            "add_seconds_max": max(r["add_seconds"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("athletes")
    a.add_argument("model", type=Path)
    h = sub.add_parser("heldout")
    h.add_argument("--models", type=Path, default=Path("/tmp/photos-models"))
    for p in (a, h):
        p.add_argument("--people", default="all")
        p.add_argument("--photos", type=int, default=5)
        p.add_argument("--out", type=Path, default=None)
        p.add_argument("--work", type=Path, default=Path("/tmp/photos-add-bench"))
    args = parser.parse_args()
    rows = []
    for person in people(args.people):
        if args.mode == "athletes":
            model = args.model
            known = test_split(model)
        else:
            model = heldout_model(person.name, args.models)
            known = test_split(model)
        row = add_one(model, person, args.photos, args.work, known)
        rows.append(row)
        print(f"{row['person']:28s} named on {100 * row['recognised']:5.1f} % of {row['other_photos']} other photos; "
              f"known test {row['known_correct_before']}->{row['known_correct_after']} of {row['known_test_images']} "
              f"({row['known_changed']} answers changed); strangers unknown {100 * row['strangers_unknown_before']:.1f}"
              f" -> {100 * row['strangers_unknown_after']:.1f} %; add {row['add_seconds']:.1f} s "
              f"(refit {row['refit_seconds']:.2f} s)", flush=True)
    result = {"mode": args.mode, "photos": args.photos, "rows": rows, "summary": summary(rows)}
    print(json.dumps(result["summary"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
