"""``image-classifier sort`` (issue 27): its speed against ``check``'s face survey, where its time
goes, and how a folder mixing known people and strangers comes out.

    .venv/bin/python bench/sort.py speed MODEL_DIR [DATA] [--repeats 3] [--out sort-speed.json]
    .venv/bin/python bench/sort.py stages MODEL_DIR [DATA] [--out sort-stages.json]
    .venv/bin/python bench/sort.py open-set MODEL_DIR [--keep 0.95] [--out sort-open-set.json]

* **speed**: on DATA (default ``../shared/datasets/athletes``), ``repeats`` times and interleaved (the
  machine is shared: its load moves both alike): (1) ``check``'s face survey of every photo,
  ``survey_faces`` on an empty face cache, exactly what ``image-classifier check`` runs, timed by
  the survey itself (the file scan before it is not counted); (2) ``image-classifier sort MODEL_DIR
  DATA`` in a fresh process on another empty face cache, timed from process start to exit (model
  loading, listing, hashing, faces, answers, CSV files all counted); then (3) the same ``sort`` again
  into a new output folder with the faces now cached. Reported: medians, and the ratio sort /
  survey (below 1: sort is faster) measured in this run, of the medians and paired (each repeat's
  own ratio; ``python bench/sort.py summary SPEED.json`` recomputes both from a saved run), and
  the paired ratio of the CPU seconds each whole process tree used (the survey's start, imports and
  scan included; the face workers included): the work done, which a busy machine does not stretch.
* **stages**: one pass over DATA in this process, each stage timed on its own: decode (at the face
  detector's size), detection (the HOG cascade), landmarks + descriptors (dlib), the head (bank
  distance + logistic regression), and the whole-image network for the photos where no face
  decides (decode at 224 px + forward pass, one thread): where ``sort``'s time goes uncached.
* **open-set**: the athletes' test photos (MODEL_DIR's split.csv) mixed with the 150 strangers of
  ``../shared/datasets/unknown_people`` in one folder, sorted with ``--link``: the share of strangers
  in ``unknown/``, of athletes in their own folder, in another person's and in ``unknown/``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ATHLETES = SHARED / "datasets" / "athletes"
STRANGERS = SHARED / "datasets" / "unknown_people"


def _env(cache: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if cache is not None:
        env["IMAGE_CLASSIFIER_CACHE_DIR"] = str(cache)
    return env


SURVEY = """
import json, sys, time
from image_classifier.data.scan import scan_dataset
from image_classifier.faces import FaceCache, survey_faces
records = scan_dataset(sys.argv[1]).records
survey = survey_faces(records, FaceCache(sys.argv[2]))
print(json.dumps({"seconds": survey.seconds, "images": survey.images}))
"""


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and their own children (a
    child's face workers included): the work a run did, which the machine's load does not stretch
    the way it stretches wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def survey_seconds(data: Path, cache: Path) -> tuple[float, int, float]:
    """(the survey's own seconds, images, CPU seconds of its whole process: start, imports and scan included)."""
    cpu = _children_cpu()
    run = subprocess.run([sys.executable, "-c", SURVEY, str(data), str(cache)], capture_output=True, text=True,
                         env=_env(), check=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    return out["seconds"], out["images"], _children_cpu() - cpu


def sort_seconds(model: Path, data: Path, out: Path, cache: Path) -> tuple[float, str, float]:
    """(wall seconds from process start to exit, sort's last line, CPU seconds of its process and workers)."""
    shutil.rmtree(out, ignore_errors=True)
    cpu = _children_cpu()
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "image_classifier", "sort", str(model), str(data), "--out", str(out),
                          "--no-progress", "--cache-dir", str(cache)], capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    return seconds, run.stdout.strip().splitlines()[-1], _children_cpu() - cpu


def speed(args: argparse.Namespace) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="sort-bench-") as tmp:
        work = Path(tmp)
        for k in range(args.repeats):
            s_cache, o_cache = work / f"survey-{k}", work / f"sort-{k}"
            survey, images, survey_cpu = survey_seconds(args.data, s_cache)
            uncached, line, sort_cpu = sort_seconds(args.model, args.data, work / f"out-{k}", o_cache)
            cached, cached_line, _ = sort_seconds(args.model, args.data, work / f"out-{k}-again", o_cache)
            rows.append({"survey_s": round(survey, 2), "sort_uncached_s": round(uncached, 2),
                         "sort_cached_s": round(cached, 2), "survey_cpu_s": round(survey_cpu, 2),
                         "sort_uncached_cpu_s": round(sort_cpu, 2), "images": images, "sort_says": line,
                         "sort_cached_says": cached_line})
            print(f"repeat {k + 1}: survey {survey:.1f} s ({survey_cpu:.1f} CPU s), sort uncached {uncached:.1f} s "
                  f"({sort_cpu:.1f} CPU s), cached {cached:.1f} s ({images / cached:.1f} photos/s from process start)",
                  flush=True)
            shutil.rmtree(s_cache, ignore_errors=True)
            shutil.rmtree(o_cache, ignore_errors=True)
    return {"data": str(args.data), "model": str(args.model), "repeats": rows, **summarise(rows),
            "load_average": os.getloadavg()}


def summarise(rows: list[dict]) -> dict:
    """Medians of the repeats; sort / survey both as the ratio of the medians and as the median of
    each repeat's own ratio (a repeat's two runs share the machine's load of the moment)."""
    med = {k: statistics.median(r[k] for r in rows) for k in ("survey_s", "sort_uncached_s", "sort_cached_s")}
    images = rows[0]["images"]
    return {"median": med, "sort_over_survey": round(med["sort_uncached_s"] / med["survey_s"], 3),
            "sort_over_survey_paired": round(statistics.median(r["sort_uncached_s"] / r["survey_s"] for r in rows), 3),
            "repeats_sort_faster": sum(r["sort_uncached_s"] < r["survey_s"] for r in rows),
            # Older saved runs have no CPU times.
            **({"sort_over_survey_cpu": round(statistics.median(r["sort_uncached_cpu_s"] / r["survey_cpu_s"]
                                                                for r in rows), 3)}
               if all("survey_cpu_s" in r for r in rows) else {}),
            "cached_photos_per_s": round(images / med["sort_cached_s"], 1), "images": images}


def stages(args: argparse.Namespace) -> dict:
    import torch

    import image_classifier as ic
    from image_classifier.data.decode import decode_image
    from image_classifier.data.scan import list_files
    from image_classifier.faces.detect import CHIP_PADDING, CHIP_SIZE, MAX_DESCRIBED, _find
    from image_classifier.faces.dlib_weights import face_models, import_dlib
    from image_classifier.faces.store import DECODE_SIDE
    from image_classifier.models.face_embedding import choose_face

    torch.set_num_threads(1)  # as sort runs the network beside the face workers
    model = ic.load_model(args.model, backend="torch")
    head = model.face_path.head
    dlib = import_dlib()
    t = {"read": 0.0, "decode": 0.0, "detection": 0.0, "landmarks_descriptors": 0.0, "head": 0.0,
         "fallback_decode": 0.0, "fallback_network": 0.0}
    fallback: list = []
    files = list_files(args.data)
    with face_models() as models:
        for path in files:
            t0 = time.perf_counter()
            data = path.read_bytes()
            t1 = time.perf_counter()
            image = decode_image(data, target_size=DECODE_SIDE).image
            t2 = time.perf_counter()
            arr, _, found, _ = _find(models, image)
            t3 = time.perf_counter()
            shapes = [models.landmarks(arr, rect) for rect, _ in found]
            order = sorted(range(len(found)), key=lambda i: -found[i][0].area())
            desc = np.asarray([models.descriptor.compute_face_descriptor(
                dlib.get_face_chip(arr, shapes[i], CHIP_SIZE, CHIP_PADDING)) for i in order[:MAX_DESCRIBED]],
                dtype=np.float32) if found else None
            t4 = time.perf_counter()
            index, _ = choose_face(desc, head.bank, head.max_distance)
            if index is not None:
                model.face_path.probabilities(desc[index][None].astype(np.float64))
            t5 = time.perf_counter()
            t["read"] += t1 - t0
            t["decode"] += t2 - t1
            t["detection"] += t3 - t2
            t["landmarks_descriptors"] += t4 - t3
            t["head"] += t5 - t4
            if index is None:
                fallback.append(data)
    t0 = time.perf_counter()
    pictures = [decode_image(d, target_size=model.preprocessing.input_size).image for d in fallback]
    t1 = time.perf_counter()
    for start in range(0, len(pictures), 32):
        model.predict_tensor(model.preprocess_array(pictures[start:start + 32]))
    t2 = time.perf_counter()
    t["fallback_decode"], t["fallback_network"] = t1 - t0, t2 - t1
    total = sum(t.values())
    for k, v in t.items():
        print(f"{k:24s} {v:7.2f} s  {100 * v / total:5.1f} %")
    return {"images": len(files), "fallback_images": len(fallback), "seconds": {k: round(v, 3) for k, v in t.items()},
            "share": {k: round(v / total, 4) for k, v in t.items()}, "load_average": os.getloadavg()}


def open_set(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="sort-open-set-") as tmp:
        folder = Path(tmp) / "photos"
        with open(args.model / "split.csv", newline="") as fh:
            test = [r for r in csv.DictReader(fh) if r["split"] == "test"]
        for r in test:
            dest = folder / "athletes" / r["class"] / Path(r["rel_path"]).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to((ATHLETES / r["rel_path"]).resolve())
        (folder / "strangers").mkdir()
        for f in sorted(STRANGERS.iterdir()):
            (folder / "strangers" / f.name).symlink_to(f)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "image_classifier", "sort", str(args.model), str(folder), "--out", str(out),
               "--link", "--no-progress"] + (["--keep", str(args.keep)] if args.keep else [])
        run = subprocess.run(cmd, capture_output=True, text=True, env=_env())
        if run.returncode != 0:
            raise SystemExit(run.stderr[-3000:])
        with open(out / "predictions.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        # What a person sees: the links in each folder.
        in_folder = {p.relative_to(out).parts[0]: 0 for p in out.iterdir() if p.is_dir()}
        for p in out.rglob("*"):
            if p.is_symlink():
                in_folder[p.relative_to(out).parts[0]] += 1
    strangers = [r for r in rows if r["path"].startswith("strangers/")]
    athletes = [r for r in rows if r["path"].startswith("athletes/")]
    own = sum(r["label"] == r["path"].split("/")[1] for r in athletes)
    unknown = sum(r["label"] == "unknown" for r in athletes)
    result = {"strangers": len(strangers), "strangers_unknown": sum(r["label"] == "unknown" for r in strangers),
              "athletes": len(athletes), "athletes_own_folder": own, "athletes_unknown": unknown,
              "athletes_other_person": len(athletes) - own - unknown, "links_per_folder": in_folder,
              "keep": args.keep or 0.95, "none_of_these": [ln for ln in run.stderr.splitlines()
                                                           if ln.startswith("none of these")]}
    result["shares"] = {"strangers_unknown": result["strangers_unknown"] / len(strangers),
                        "athletes_own_folder": own / len(athletes),
                        "athletes_other_person": result["athletes_other_person"] / len(athletes),
                        "athletes_unknown": unknown / len(athletes)}
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    summary = sub.add_parser("summary")
    summary.add_argument("json", type=Path)
    for name in ("speed", "stages", "open-set"):
        p = sub.add_parser(name)
        p.add_argument("model", type=Path)
        if name != "open-set":
            p.add_argument("data", type=Path, nargs="?", default=ATHLETES)
        p.add_argument("--out", type=Path, default=None)
    sub.choices["speed"].add_argument("--repeats", type=int, default=3)
    sub.choices["open-set"].add_argument("--keep", type=float, default=None)
    args = parser.parse_args()
    if args.mode == "summary":
        print(json.dumps(summarise(json.loads(args.json.read_text())["repeats"]), indent=2))
        return
    result = {"speed": speed, "stages": stages, "open-set": open_set}[args.mode](args)
    if args.mode == "speed":
        print(json.dumps({k: result[k] for k in ("median", "sort_over_survey", "sort_over_survey_paired",
                                                 "repeats_sort_faster", "sort_over_survey_cpu", "cached_photos_per_s")
                          if k in result}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
