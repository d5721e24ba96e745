"""Everyone in a group photo (issue 27): collages of four known faces and one stranger, each face
answered on its own by a face model.

    .venv/bin/python bench/group_photo.py MODEL_DIR [--collages 20] [--keep K] [--out group.json]

MODEL_DIR is a face model trained on ``../shared/datasets/athletes`` (its ``split.csv`` beside it).
Each collage (``tests/face_helpers.face_collage``: each photo's largest face cropped with some hair
and background, three tiles a row) takes four photos of the model's **test** split that show one
face, a frontal one (found by the detector's first, HOG, step: a collage is searched as one photo),
drawn with a seed per collage, and one of the 150 strangers of ``../shared/datasets/unknown_people``.
A face counts as named correctly when the face found in a photo's tile is answered with that
photo's class (the stranger: ``unknown``); a face not found counts as wrong. Reported: faces found,
faces named correctly (known and strangers apart), and collages with every face right.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "tests"))

from face_helpers import face_collage, tile_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--collages", type=int, default=20)
    parser.add_argument("--keep", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import image_classifier as ic
    from image_classifier.faces import FaceCache
    from image_classifier.training.cache import default_cache_dir

    cache = FaceCache(default_cache_dir())
    model = ic.load_model(args.model, backend="torch", face_cache=cache)
    if args.keep is not None:
        model = model.with_keep(args.keep)
    card = json.loads((args.model / "model.json").read_text())
    data = Path(card["args"]["data"])
    with open(args.model / "split.csv", newline="") as fh:
        test = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    found, _ = cache.analyse_files([(data / r["rel_path"], r["sha256"]) for r in test])
    frontal = [(data / r["rel_path"], r["class"]) for r in test
               if len(found[r["sha256"]].faces) == 1 and found[r["sha256"]].faces[0].method == "hog"]
    strangers = sorted((SHARED / "datasets" / "unknown_people").iterdir())
    totals = {"faces": 0, "found": 0, "known": 0, "known_right": 0, "strangers": 0, "strangers_right": 0,
              "collages_all_right": 0, "known_named_other": 0}
    rows = []
    with tempfile.TemporaryDirectory(prefix="group-bench-") as tmp:
        for k in range(args.collages):
            rng = np.random.default_rng(k)
            picks = [frontal[i] for i in rng.choice(len(frontal), 4, replace=False)]
            stranger = strangers[int(rng.integers(len(strangers)))]
            path = Path(tmp) / f"group-{k}.jpg"
            tiles = face_collage([p for p, _ in picks] + [stranger], path)
            expected = [c for _, c in picks] + ["unknown"]
            details = model.predict_details(path)[1][0]
            named: dict[int, str] = {}
            for face in details.get("faces", []):
                t = tile_of(face["box"], tiles)
                if t is not None:
                    named[t] = face["label"]
            right = [named.get(i) == e for i, e in enumerate(expected)]
            totals["faces"] += 5
            totals["found"] += len(named)
            totals["known"] += 4
            totals["known_right"] += sum(right[:4])
            totals["known_named_other"] += sum(named.get(i) not in (None, "unknown", e) for i, e in enumerate(expected[:4]))
            totals["strangers"] += 1
            totals["strangers_right"] += right[4]
            totals["collages_all_right"] += all(right)
            rows.append({"photos": [str(p) for p, _ in picks] + [str(stranger)], "expected": expected,
                         "answers": [named.get(i) for i in range(5)]})
            print(f"collage {k + 1}: " + ", ".join(f"{e} -> {named.get(i)}" for i, e in enumerate(expected)), flush=True)
    result = {"model": str(args.model), "keep": args.keep, "collages": args.collages, "totals": totals, "rows": rows,
              "known_photos_available": len(frontal)}
    print(json.dumps(totals, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
