"""Grouping faces into people (``image-classifier group``) and suspect labels (``check``), measured.

    .venv/bin/python bench/group.py accuracy [--folders athletes,lfw_people12] [--out group.json]
    .venv/bin/python bench/group.py samples [--draws 40] [--keep 0.8]
    .venv/bin/python bench/group.py suspects [--seeds 0-4] [--moved 10]
    .venv/bin/python bench/group.py speed [--repeats 3]
    .venv/bin/python bench/group.py scale [--sizes 1000,2000,5000,10000,20000,50000] [--dlib-max 10000]

* **accuracy**: BCubed precision and recall (each face in no group counts as a cluster of its own)
  of the default method and of the alternatives (issue 28's first method: every face in one round,
  edges counted; the rounds and the edge weights one at a time; quality rules instead of the main
  faces for the first round; Chinese whispers at a fixed distance, the core + attach method over a
  grid of both distances, average-linkage agglomerative clustering cut at a distance, HDBSCAN) on
  every folder, with the folder names hidden and used only to score. Two
  protocols: ``single`` clusters the descriptors of the photos with exactly one face (the issue's
  reference protocol), ``group`` clusters every face of every photo, as ``group`` does, and scores
  the faces of the one-face photos. On the athletes a third truth is printed: the folder names with
  the 11 one-face photos that show someone else (checked by eye, :data:`ATHLETES_SOMEONE_ELSE`)
  given their own identities: a method that keeps a photo of someone else apart from the athlete
  is right, which the folder names count as an error.
* **samples**: the default against its predecessors on ``--draws`` random samples of ``--keep``
  of each folder's photos (the same samples for every method), every face clustered: median and
  lowest precision and recall, and how many samples miss each target. A rule tuned to one folder
  holds there; one that holds on most samples of it does not depend on a few photos.
* **suspects**: for each seed, ``--moved`` photos with a face (chosen at random) are moved to
  another person's folder (a copy of the athletes folder made of symbolic links), then
  ``image-classifier check --json`` runs on it; counts of moved photos flagged and of the other
  photos flagged (and how many of those are on the by-eye list of photos that show someone else).
* **speed**: ``image-classifier group`` (a new process, as a user runs it) on 1,000 photos whose
  faces are cached (the athletes and lfw_people12 folders, 1,003 photos, as one folder of links):
  first run into a new OUT (thumbnails made) and a re-run (nothing new), median of ``--repeats``;
  the clustering alone against dlib's ``chinese_whispers_clustering`` at 0.5 on the same faces.
* **scale**: the cost of the clustering against the number of faces, on synthetic descriptors
  shaped like the real ones (people of 20 faces; spread and distances between people measured on
  lfw_people12), against dlib's Chinese whispers up to ``--dlib-max`` faces.

Faces are read from the face cache (``~/.cache/image-classifier/decoded/faces-v2``); the first run
on a folder analyses it (about 1-2 minutes for lfw_people12 on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from faces import parse_seeds  # bench/faces.py: "0-4,7" -> [0, 1, 2, 3, 4, 7]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"

#: One-face photos of the athletes folder that show someone other than the folder's athlete,
#: found by looking at the face of each of the 320 one-face photos (kobe_(94) and the other
#: doubtful-looking ones were judged to be the athlete). Used as a second truth only.
ATHLETES_SOMEONE_ELSE = {  # photo -> who it shows instead (the same text: the same person)
    "Kobe Bryant/kobe_(108).jpg": "a woman",
    "Kobe Bryant/kobe_(2).jpg": "a woman",
    "Kobe Bryant/kobe_(110).jpg": "a girl",
    "Kobe Bryant/kobe_(77).jpg": "a girl",
    "Kobe Bryant/kobe_(52).jpg": "a man in the crowd",
    "Kobe Bryant/kobe_(68).jpg": "another basketball player (1)",
    "Kobe Bryant/kobe_(7).jpg": "another basketball player (2)",
    "Kobe Bryant/kobe_(8).jpg": "another basketball player (3)",
    "Maria Sharapova/Sharapova_ (74).jpg": "a man in a suit",
    "ronaldo/ronaldo_(63).jpg": "another footballer",
    "ronaldo/ronaldo_(73).jpg": "another footballer",
}


def python() -> list[str]:
    return [sys.executable, "-m", "image_classifier"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), e.get("PYTHONPATH", "")])
    return e


class FaceInfo:
    """What the face cache says of each face, for the methods that group some faces first."""

    def __init__(self, photos: list[str], areas: list[float], scores: list[float], methods: list[str]) -> None:
        self.photos, self.areas, self.scores, self.methods = photos, np.asarray(areas), np.asarray(scores), methods

    def subset(self, idx) -> "FaceInfo":
        return FaceInfo([self.photos[i] for i in idx], self.areas[idx].tolist(), self.scores[idx].tolist(),
                        [self.methods[i] for i in idx])


def folder_faces(name: str):
    """(descriptors, photo of each face, folder label of each face, one-face-photo mask, FaceInfo) of a folder."""
    from image_classifier.data.scan import scan_dataset
    from image_classifier.faces import FaceCache
    from image_classifier.fileio import default_cache_dir

    records = scan_dataset(DATASETS / name).records
    found, _ = FaceCache(default_cache_dir()).analyse_files([(r.path, r.sha256) for r in records], progress=True)
    x, photos, labels, single, areas, scores, how = [], [], [], [], [], [], []
    for r in records:
        a = found.get(r.sha256)
        if a is None or a.descriptors is None:
            continue
        for k, d in enumerate(a.descriptors):
            x.append(d)
            photos.append(r.rel_path)
            labels.append(r.class_name)
            single.append(len(a.faces) == 1)
            areas.append(a.faces[k].area)
            scores.append(a.faces[k].score)
            how.append(a.faces[k].method)
    return (np.asarray(x, np.float64), photos, np.asarray(labels), np.asarray(single),
            FaceInfo(photos, areas, scores, how))


# -- the methods compared -------------------------------------------------------------------------
# Each method maps (descriptors, photo of each face, FaceInfo) to labels (-1: single).

def main_first(info: FaceInfo):
    from image_classifier.faces.clustering import main_faces

    return main_faces(info.photos, info.areas.tolist())


def method_core_attach(core: float, attach: float, *, weighted: bool = True, first=main_first):
    """The code's core + attach method; ``first``: FaceInfo -> faces grouped in the first round
    (None: one round for every face)."""
    from image_classifier.faces.clustering import ClusterParams, cluster_faces

    def run(x, photos, info):
        mask = None if first is None else first(info)
        return cluster_faces(x, photos, ClusterParams(core, attach, weighted=weighted), first=mask).labels
    return run


def side(info: FaceInfo) -> np.ndarray:
    return np.sqrt(info.areas)


def quality_first(score: float | None = None, no_cnn: bool = False, min_side: float | None = None,
                  relative: float | None = None):
    """Faces grouped first: those the detector is sure of (HOG margin >= ``score``; not found by
    the CNN step, which only runs when HOG saw no frontal face), large enough (box side >=
    ``min_side`` px) or at least ``relative`` x the side of their photo's largest face."""
    def first(info: FaceInfo) -> np.ndarray:
        keep = np.ones(len(info.photos), dtype=bool)
        if score is not None:
            keep &= info.scores >= score
        if no_cnn:
            keep &= np.array([m != "cnn" for m in info.methods])
        if min_side is not None:
            keep &= side(info) >= min_side
        if relative is not None:
            largest: dict[str, float] = {}
            for p, v in zip(info.photos, side(info)):
                largest[p] = max(largest.get(p, 0.0), float(v))
            keep &= np.array([v >= relative * largest[p] for p, v in zip(info.photos, side(info))])
        return keep
    return first


def method_dlib_cw(threshold: float):
    def run(x, photos, info=None):
        import dlib

        from image_classifier.faces.clustering import SINGLE

        labels = np.asarray(dlib.chinese_whispers_clustering([dlib.vector(v.tolist()) for v in x], threshold))
        counts = Counter(labels.tolist())
        return np.array([v if counts[v] >= 3 else SINGLE for v in labels])  # the same minimum group size
    return run


def method_average(cut: float):
    def run(x, photos, info):
        from scipy.cluster.hierarchy import fcluster, linkage

        from image_classifier.faces.clustering import SINGLE

        labels = fcluster(linkage(x, "average"), cut, "distance")
        counts = Counter(labels.tolist())
        return np.array([v if counts[v] >= 3 else SINGLE for v in labels])
    return run


def method_hdbscan(min_cluster_size: int = 3):
    def run(x, photos, info):
        from sklearn.cluster import HDBSCAN

        from image_classifier.faces.clustering import SINGLE

        labels = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(x)
        return np.where(labels < 0, SINGLE, labels)
    return run


def methods() -> list[tuple[str, object]]:
    from image_classifier.faces.clustering import ATTACH_DISTANCE, CORE_DISTANCE

    c, a = CORE_DISTANCE, ATTACH_DISTANCE
    out: list[tuple[str, object]] = [
        (f"default: main faces first, core {c} (weighted) + attach {a}", method_core_attach(c, a)),
        (f"issue 28's method: one round, core {c} (counted edges) + attach {a}",
         method_core_attach(c, a, weighted=False, first=None)),
        (f"one round, core {c} (weighted) + attach {a}", method_core_attach(c, a, first=None)),
        (f"main faces first, core {c} (counted edges) + attach {a}", method_core_attach(c, a, weighted=False)),
    ]
    # Instead of the main faces, the faces a quality rule trusts are grouped first.
    gates = [("not found by the CNN step", quality_first(no_cnn=True))]
    gates += [(f"HOG margin >= {t}", quality_first(score=t)) for t in (0.2, 0.5)]
    gates += [(f"not CNN, HOG margin >= {t}", quality_first(score=t, no_cnn=True)) for t in (0.3,)]
    gates += [(f"box side >= {v} px", quality_first(min_side=v)) for v in (50, 60)]
    gates += [(f"side >= {r} x the photo's largest face", quality_first(relative=r)) for r in (0.5, 0.7, 0.9)]
    out += [(f"first: {name}, core {c} (weighted) + attach {a}", method_core_attach(c, a, first=g))
            for name, g in gates]
    out += [(f"Chinese whispers {t} (this code, counted edges)", method_core_attach(t, 0.0, weighted=False, first=None))
            for t in (0.45, 0.5, 0.55, 0.6)]
    out += [(f"dlib chinese_whispers_clustering {t}", method_dlib_cw(t)) for t in (0.5, 0.55)]
    out += [(f"main faces first, core {cc} (weighted) + attach {aa}", method_core_attach(cc, aa))
            for cc in (0.45, 0.5, 0.55) for aa in (0.5, 0.55, 0.6, 0.65)
            if (cc, aa) != (c, a) and aa > cc]
    out += [(f"average linkage cut {t}", method_average(t)) for t in (0.6, 0.65, 0.7)]
    out += [("HDBSCAN min_cluster_size 3", method_hdbscan(3))]
    return out


def accuracy(args: argparse.Namespace) -> dict:
    from image_classifier.faces.clustering import bcubed

    results: dict = {}
    data = {name: folder_faces(name) for name in args.folders.split(",")}
    rows = []
    for label, method in methods():
        row = {"method": label}
        for name, (x, photos, truth, single, info) in data.items():
            idx = np.flatnonzero(single)
            started = time.perf_counter()
            lab = method(x[idx], [photos[i] for i in idx], info.subset(idx))
            seconds = time.perf_counter() - started
            p, r = bcubed(lab, truth[idx])
            row[f"{name}/single"] = (round(p, 3), round(r, 3))
            # The group protocol: every face clustered (the methods of this code never put two faces of
            # a photo together; the others may), the one-face photos' faces scored.
            lab_all = np.asarray(method(x, photos, info))
            p2, r2 = bcubed(lab_all[idx], truth[idx])
            row[f"{name}/group"] = (round(p2, 3), round(r2, 3))
            if name == "athletes":
                fixed = [ATHLETES_SOMEONE_ELSE.get(photos[i], truth[i]) for i in idx]
                p3, r3 = bcubed(lab, fixed)
                row[f"{name}/single, by-eye truth"] = (round(p3, 3), round(r3, 3))
                p4, r4 = bcubed(lab_all[idx], fixed)
                row[f"{name}/group, by-eye truth"] = (round(p4, 3), round(r4, 3))
            row[f"{name}/seconds"] = round(seconds, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    results["faces"] = {name: {"faces": int(len(x)), "one_face_photos": int(single.sum())}
                        for name, (x, _, _, single, _) in data.items()}
    results["rows"] = rows
    return results


#: The issue's targets (BCubed precision, recall) per folder.
TARGETS = {"athletes": (0.98, 0.92), "lfw_people12": (0.98, 0.95)}


def samples(args: argparse.Namespace) -> dict:
    """The methods that decide between the default and its predecessors on random samples of each
    folder's photos (``--keep`` of them, the same samples for every method): every face of the
    sampled photos clustered, the one-face photos' faces scored. A method tuned to a folder holds
    on that folder; one that holds on most of its samples holds on folders like it."""
    from image_classifier.faces.clustering import ATTACH_DISTANCE, CORE_DISTANCE, bcubed

    c, a = CORE_DISTANCE, ATTACH_DISTANCE
    compared = [("default: main faces first, weighted", method_core_attach(c, a)),
                ("issue 28's method: one round, counted edges", method_core_attach(c, a, weighted=False, first=None)),
                ("one round, weighted", method_core_attach(c, a, first=None)),
                ("main faces first, counted edges", method_core_attach(c, a, weighted=False))]
    data = {name: folder_faces(name) for name in args.folders.split(",")}
    rows = []
    for label, method in compared:
        row: dict = {"method": label}
        for name, (x, photos, truth, single, info) in data.items():
            names = sorted(set(photos))
            scores, eye = [], []
            for draw in range(args.draws):
                rng = random.Random(draw)
                kept = set(rng.sample(names, round(args.keep * len(names))))
                idx = np.array([k for k, p in enumerate(photos) if p in kept])
                lab = np.asarray(method(x[idx], [photos[k] for k in idx], info.subset(idx)))
                scored = single[idx]
                scores.append(bcubed(lab[scored], truth[idx][scored]))
                if name == "athletes":
                    fixed = [ATHLETES_SOMEONE_ELSE.get(photos[k], truth[k]) for k in idx[scored]]
                    eye.append(bcubed(lab[scored], fixed))
            p, r = np.array(scores).T
            want_p, want_r = TARGETS.get(name, (0.98, 0.95))
            row[name] = {"precision_median": round(float(np.median(p)), 3), "precision_min": round(float(p.min()), 3),
                         "recall_median": round(float(np.median(r)), 3), "recall_min": round(float(r.min()), 3),
                         "draws": args.draws, "precision_under_target": int((p < want_p).sum()),
                         "recall_under_target": int((r < want_r).sum())}
            if eye:
                pe, re_ = np.array(eye).T
                row[name]["by_eye_truth_median"] = (round(float(np.median(pe)), 3), round(float(np.median(re_)), 3))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"keep": args.keep, "draws": args.draws, "rows": rows}


# -- suspect labels ------------------------------------------------------------------------------

def suspects(args: argparse.Namespace) -> dict:
    from image_classifier.data.scan import scan_dataset
    from image_classifier.faces import FaceCache
    from image_classifier.fileio import default_cache_dir

    source = DATASETS / "athletes"
    records = scan_dataset(source).records
    found, _ = FaceCache(default_cache_dir()).analyse_files([(r.path, r.sha256) for r in records])
    with_face = [r for r in records if found.get(r.sha256) is not None and found[r.sha256].faces]
    classes = sorted({r.class_name for r in records})
    rows = []
    for seed in parse_seeds(args.seeds):
        rng = random.Random(seed)
        moved = {r.rel_path: rng.choice([c for c in classes if c != r.class_name])
                 for r in rng.sample(with_face, args.moved)}
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "athletes"
            new_path = {}
            for r in records:
                cls = moved.get(r.rel_path, r.class_name)
                dest = root / cls / Path(r.rel_path).name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():  # same file name in two folders: keep both
                    dest = dest.with_name("moved_" + dest.name)
                dest.symlink_to(r.path.resolve())
                new_path[dest.relative_to(root).as_posix()] = r.rel_path
            out = subprocess.run([*python(), "check", str(root), "--json", "--no-near-duplicates"],
                                 capture_output=True, text=True, env=env())
            report = json.loads(out.stdout)
        flagged = {new_path[s["path"]] for s in report["suspect_labels"]}
        moved_flagged = sorted(flagged & set(moved))
        others = sorted(flagged - set(moved))
        on_list = [p for p in others if p in ATHLETES_SOMEONE_ELSE]
        row = {"seed": seed, "moved": args.moved, "moved_flagged": len(moved_flagged),
               "not_moved_flagged": len(others), "of_which_show_someone_else": len(on_list),
               "correct_photos_flagged": len(others) - len(on_list),
               "correct_photos_flagged_list": [p for p in others if p not in ATHLETES_SOMEONE_ELSE],
               "moved_not_flagged": sorted(set(moved) - flagged)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {k: statistics.median(r[k] for r in rows)
               for k in ("moved_flagged", "not_moved_flagged", "of_which_show_someone_else", "correct_photos_flagged")}
    # A flag is right when the photo does not show its folder's person: moved, or on the by-eye list.
    summary["precision"] = round(statistics.median(
        (r["moved_flagged"] + r["of_which_show_someone_else"]) / max(1, r["moved_flagged"] + r["not_moved_flagged"])
        for r in rows), 3)
    summary["precision_counting_only_moved_as_right"] = round(statistics.median(
        r["moved_flagged"] / max(1, r["moved_flagged"] + r["not_moved_flagged"]) for r in rows), 3)
    summary["recall_of_moved"] = round(statistics.median(r["moved_flagged"] / r["moved"] for r in rows), 3)
    summary["recall_of_by_eye_list"] = round(statistics.median(
        r["of_which_show_someone_else"] / len(ATHLETES_SOMEONE_ELSE) for r in rows), 3)
    print("median over seeds:", json.dumps(summary))
    return {"rows": rows, "median": summary}


# -- speed ---------------------------------------------------------------------------------------

def thousand_photos(dest: Path) -> int:
    """The athletes and lfw_people12 photos as one folder of links (1,003 photos)."""
    n = 0
    for name in ("athletes", "lfw_people12"):
        for path in sorted((DATASETS / name).rglob("*")):
            if path.is_file():
                link = dest / name / path.relative_to(DATASETS / name)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path.resolve())
                n += 1
    return n


def speed(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "photos"
        n = thousand_photos(data)
        # Warm the face cache (a no-op when the folders were analysed before).
        subprocess.run([*python(), "group", str(data), "--out", str(Path(tmp) / "warm"), "--no-progress"],
                       check=True, capture_output=True, env=env())
        first, again = [], []
        for k in range(args.repeats):
            out = Path(tmp) / f"out{k}"
            for times in (first, again):
                started = time.perf_counter()
                subprocess.run([*python(), "group", str(data), "--out", str(out), "--no-progress"], check=True,
                               capture_output=True, env=env())
                times.append(time.perf_counter() - started)
            shutil.rmtree(out)
        summary = json.loads(subprocess.run([*python(), "group", str(data), "--out", str(Path(tmp) / "warm"),
                                             "--json", "--no-progress"], check=True, capture_output=True,
                                            text=True, env=env()).stdout)
    # The clustering alone (as group runs it: main faces first), against dlib's Chinese whispers
    # on the same faces.
    from image_classifier.faces.clustering import cluster_faces, main_faces

    xs, ps, areas = [], [], []
    for name in ("athletes", "lfw_people12"):
        x, photos, _, _, info = folder_faces(name)
        xs.append(x)
        ps += [f"{name}/{p}" for p in photos]
        areas += info.areas.tolist()
    x = np.concatenate(xs)
    ours, theirs = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        cluster_faces(x, ps, first=main_faces(ps, areas))
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        method_dlib_cw(0.5)(x, ps)
        theirs.append(time.perf_counter() - t0)
    result = {"photos": n, "faces": summary["faces"], "groups": len(summary["groups"]),
              "group_first_run_s": round(statistics.median(first), 2),
              "group_rerun_s": round(statistics.median(again), 2),
              "first_runs": [round(v, 2) for v in first], "reruns": [round(v, 2) for v in again],
              "clustering_s": round(statistics.median(ours), 3),
              "dlib_chinese_whispers_s": round(statistics.median(theirs), 3),
              "clustering_vs_dlib": round(statistics.median(ours) / statistics.median(theirs), 2)}
    print(json.dumps(result))
    return result


# -- scale ---------------------------------------------------------------------------------------

def synthetic(n: int, per_person: int = 20, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """``n`` descriptors of ``n / per_person`` people: centres 0.85 apart on average, faces 0.33
    (RMS) from their centre, as measured on lfw_people12 (0.41-0.88 between centres, 0.25-0.35)."""
    rng = np.random.default_rng(seed)
    people = max(1, n // per_person)
    centres = rng.normal(0, 0.85 / np.sqrt(2 * 128), (people, 128))
    who = rng.integers(0, people, n)
    x = centres[who] + rng.normal(0, 0.33 / np.sqrt(128), (n, 128))
    return x, who.tolist()


def scale(args: argparse.Namespace) -> dict:
    from image_classifier.faces.clustering import bcubed, cluster_faces

    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        x, who = synthetic(n)
        started = time.perf_counter()
        result = cluster_faces(x, list(range(n)))
        seconds = time.perf_counter() - started
        p, r = bcubed(result.labels, who)
        row = {"faces": n, "seconds": round(seconds, 2), "edges": result.edges, "bcubed": (round(p, 3), round(r, 3))}
        if n <= args.dlib_max:
            started = time.perf_counter()
            method_dlib_cw(0.5)(x, None)
            row["dlib_chinese_whispers_0.5_s"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--folders", default="athletes,lfw_people12")
    m = sub.add_parser("samples")
    m.add_argument("--folders", default="athletes,lfw_people12")
    m.add_argument("--draws", type=int, default=40)
    m.add_argument("--keep", type=float, default=0.8, help="share of each folder's photos in a sample")
    s = sub.add_parser("suspects")
    s.add_argument("--seeds", default="0-4")
    s.add_argument("--moved", type=int, default=10)
    p = sub.add_parser("speed")
    p.add_argument("--repeats", type=int, default=3)
    c = sub.add_parser("scale")
    c.add_argument("--sizes", default="1000,2000,5000,10000,20000,50000")
    c.add_argument("--dlib-max", type=int, default=10000)
    for q in (a, m, s, p, c):
        q.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    result = {"accuracy": accuracy, "samples": samples, "suspects": suspects, "speed": speed,
              "scale": scale}[args.what](args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
