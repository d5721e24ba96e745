"""Faces on a folder of people: detection, face_embedding's accuracy over split seeds, its latency.

    .venv/bin/python bench/faces.py [DATA] [--seeds 0-4] [--cnns mobilenet_v2,resnet50] [--crops]
        [--no-photos] [--no-accuracy] [--latency] [--out faces.json]

* **detection**: images with a face per class and per step of the detector cascade.
* **accuracy**: for each seed, a new stratified, duplicate-aware split (``make_split(seed)``), then
  ``face_embedding`` (and each of ``--cnns``) trained on it with that seed and scored once on its
  test split. Test accuracy is reported overall and separately on the test images with a face and
  without one, with face_embedding's errors sorted by cause: the fallback answered because no face
  was found (``no_face``) or none was like a training face (``no_known_face``); or a face decided
  wrongly in a group photo (``group_photo``) or in a photo with one face (``single_face``: a
  look-alike, a poor descriptor, or not the labelled person).
* **--crops**: the same on a folder of tight face crops cut from DATA (the largest face of every
  photo that has one, box grown by 10 %, resized to 160x160), built in a temporary folder.
* **--latency**: one prediction from a 2000x1500 JPEG file to probabilities (decode, faces,
  descriptor, head; or the fallback network), median and 95th percentile over repeats, with a
  photo that shows a face and one that does not.

Face analyses are cached by file content in ``--cache-dir`` (default: a temporary folder, so the
first seed pays for them and the timing of ``train`` includes it once).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = {"face_embedding": SHARED / "weights" / "mobilenet_v2-b0353104.pth",
           "mobilenet_v2": SHARED / "weights" / "mobilenet_v2-b0353104.pth",
           "resnet50": SHARED / "weights" / "resnet50-keras-imagenet.pth"}


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        seeds.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    return seeds


def detection(data: Path, cache) -> dict:
    from image_classifier.data.scan import scan_dataset
    from image_classifier.faces import survey_faces

    records = scan_dataset(data).records
    t0 = time.perf_counter()
    survey = survey_faces(records, cache, progress=True)
    per_method: dict[str, dict[str, int]] = {}
    for r in records:
        a = survey.analyses.get(r.rel_path)
        method = (a.method if a is not None else None) or "none"
        per_method.setdefault(r.class_name, {}).setdefault(method, 0)
        per_method[r.class_name][method] += 1
    out = {"per_class": survey.per_class, "per_class_method": per_method, "detection_rate": survey.detection_rate,
           "with_face": survey.with_face, "images": survey.images, "seconds": time.perf_counter() - t0}
    print(f"\n== detection on {data} ({survey.images} images, {out['seconds']:.1f} s) ==")
    print(survey.render())
    methods = sorted({m for v in per_method.values() for m in v})
    print(f"  {'class':<18}" + "".join(f"{m:>15}" for m in methods))
    for cls, v in per_method.items():
        print(f"  {cls:<18}" + "".join(f"{v.get(m, 0):>15}" for m in methods))
    return out


def accuracy(data: Path, seeds: list[int], archs: list[str], cache, work: Path, label: str) -> dict:
    from image_classifier import load_model
    from image_classifier.evaluate.evaluation import LabelledImage, evaluate_classifier
    from image_classifier.data.split import make_split
    from image_classifier.training import ImageCache, train_model

    image_cache = ImageCache(work / "decoded")
    runs = []
    for seed in seeds:
        split = make_split(data, seed=seed)
        test = [LabelledImage.from_record(r) for r in split.subset("test")]
        sha_of = {r.rel_path: r.sha256 for r in split.subset("test")}
        for arch in archs:
            t0 = time.perf_counter()
            result = train_model(split, arch, work / f"{label}-{arch}-{seed}", weights=WEIGHTS.get(arch), seed=seed,
                                 cache=image_cache, face_cache=cache, progress=False)
            seconds = time.perf_counter() - t0
            clf = load_model(result.model_dir, face_cache=cache)
            ev = evaluate_classifier(clf, test)
            causes = {"no_face": 0, "no_known_face": 0, "group_photo": 0, "single_face": 0}
            n_face = n_noface = ok_face = ok_noface = 0
            for p in ev["predictions"]:
                analysis = cache.get(sha_of[p["rel_path"]])
                has_face = analysis is not None and analysis.face is not None
                n_face += has_face
                n_noface += not has_face
                ok_face += has_face and p["correct"]
                ok_noface += (not has_face) and p["correct"]
                if arch == "face_embedding" and not p["correct"]:
                    if p["face"] is None:  # the fallback answered
                        cause = "no_known_face" if has_face else "no_face"
                    else:
                        cause = "group_photo" if len(analysis.faces) > 1 else "single_face"
                    causes[cause] += 1
            run = {"data": label, "arch": arch, "seed": seed, "val_accuracy": result.best_val_accuracy,
                   "test_accuracy": ev["test"]["accuracy"], "test_n": ev["test"]["n"],
                   "test_accuracy_face": ok_face / n_face if n_face else None,
                   "test_accuracy_noface": ok_noface / n_noface if n_noface else None,
                   "test_images_face": n_face, "test_images_noface": n_noface, "train_seconds": seconds,
                   "errors": [{"rel_path": p["rel_path"], "true": p["true"], "pred": p["pred"],
                               "face": p.get("face")} for p in ev["predictions"] if not p["correct"]]}
            if arch == "face_embedding":
                run["error_causes"] = causes
            runs.append(run)
            print(f"[{label}] seed {seed} {arch}: val {run['val_accuracy']:.3f} test {run['test_accuracy']:.3f} "
                  f"(face {_fmt(run['test_accuracy_face'])} on {n_face}, no face {_fmt(run['test_accuracy_noface'])} "
                  f"on {n_noface}) in {seconds:.0f} s" + (f"; errors {causes}" if arch == "face_embedding" else ""),
                  flush=True)
    print(f"\n== accuracy on {label}: test accuracy over split seeds {seeds} ==")
    for arch in archs:
        accs = [r["test_accuracy"] for r in runs if r["arch"] == arch]
        face = [r["test_accuracy_face"] for r in runs if r["arch"] == arch and r["test_accuracy_face"] is not None]
        noface = [r["test_accuracy_noface"] for r in runs if r["arch"] == arch and r["test_accuracy_noface"] is not None]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"  {arch:<15} mean {statistics.mean(accs):.3f} ± {sd:.3f} [{min(accs):.3f}, {max(accs):.3f}]  "
              f"face {_fmt(statistics.mean(face) if face else None)}  no face "
              f"{_fmt(statistics.mean(noface) if noface else None)}  per seed "
              + ", ".join(f"{a:.3f}" for a in accs))
    return {"runs": runs}


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def build_crops(data: Path, cache, out: Path) -> Path:
    """The largest face of each photo with one, box grown by 10 %, as a 160x160 crop in out/<class>/."""
    from image_classifier.data.decode import load_image
    from image_classifier.data.scan import scan_dataset
    from image_classifier.faces import survey_faces

    records = scan_dataset(data).records
    survey = survey_faces(records, cache, progress=True)
    for r in records:
        a = survey.analyses.get(r.rel_path)
        if a is None or a.face is None:
            continue
        x0, y0, x1, y1 = a.face.box
        grow = 0.1 * (x1 - x0)
        image = load_image(r.path)
        crop = image.crop((round(max(0, x0 - grow)), round(max(0, y0 - grow)), round(min(a.width, x1 + grow)),
                           round(min(a.height, y1 + grow)))).resize((160, 160))
        dest = out / r.class_name / (Path(r.rel_path).stem + ".png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        crop.save(dest)
    return out


def latency(model_dir: Path, data: Path, work: Path, repeats: int) -> dict:
    """File -> probabilities for a 2000x1500 JPEG, with a face and without one (no face cache)."""
    from PIL import Image

    from image_classifier import load_model
    from image_classifier.data.decode import load_image
    from image_classifier.faces import analyse_image

    clf = load_model(model_dir)  # no face cache: every call finds the faces and computes the descriptor
    sources = sorted(p for p in data.rglob("*") if p.is_file())
    files = {}
    for path in sources:
        image = load_image(path)
        has = analyse_image(image).face is not None
        key = "face" if has else "no_face"
        if key not in files and image.width > image.height:
            big = work / f"{key}_2000x1500.jpg"
            image.resize((2000, 1500), Image.BICUBIC).save(big, "JPEG", quality=90)
            if (analyse_image(load_image(big)).face is not None) == has:
                files[key] = big
        if len(files) == 2:
            break
    out = {}
    for key, path in files.items():
        clf.predict_proba([path])  # warm-up: loads dlib's models
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            clf.predict_proba([path])
            times.append((time.perf_counter() - t0) * 1000)
        out[key] = {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
                    "repeats": repeats, "file": path.name}
        print(f"latency, 2000x1500 JPEG {key.replace('_', ' ')}: p50 {out[key]['p50_ms']:.1f} ms, "
              f"p95 {out[key]['p95_ms']:.1f} ms over {repeats} calls", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", type=Path, default=SHARED / "datasets" / "athletes")
    p.add_argument("--seeds", default="0-4", help="split and training seeds (default 0-4)")
    p.add_argument("--cnns", default="", help="comma-separated CNNs trained on the same splits, e.g. mobilenet_v2")
    p.add_argument("--crops", action="store_true", help="also measure on tight face crops cut from DATA")
    p.add_argument("--no-accuracy", action="store_true", help="skip the training runs")
    p.add_argument("--no-photos", action="store_true", help="skip the training runs on DATA itself (e.g. with --crops)")
    p.add_argument("--latency", action="store_true", help="time one prediction from a 2000x1500 JPEG")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--cache-dir", type=Path, default=None, help="face and decode cache (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    args = p.parse_args(argv)

    from image_classifier.faces import FaceCache
    from image_classifier.runtime import configure

    configure()
    tmp = tempfile.TemporaryDirectory(prefix="bench-faces-")
    work = Path(tmp.name)
    cache = FaceCache(args.cache_dir or work / "cache")
    seeds = parse_seeds(args.seeds)
    archs = ["face_embedding", *[a for a in args.cnns.split(",") if a]]
    results: dict = {"data": str(args.data), "seeds": seeds}
    results["detection"] = detection(args.data, cache)
    if not (args.no_accuracy or args.no_photos):
        results["accuracy"] = accuracy(args.data, seeds, archs, cache, work, "photos")
    if args.crops:
        crops = build_crops(args.data, cache, work / "crops")
        results["crops_detection"] = detection(crops, cache)
        if not args.no_accuracy:
            results["crops_accuracy"] = accuracy(crops, seeds, archs, cache, work, "crops")
    if args.latency:
        from image_classifier.data.split import make_split
        from image_classifier.training import train_model

        model = work / "latency-model"
        train_model(make_split(args.data, seed=0), "face_embedding", model, weights=WEIGHTS["face_embedding"],
                    face_cache=cache, progress=False)
        results["latency"] = latency(model, args.data, work, args.repeats)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
