"""Scale: how the work grows with the number of images, with processes, and on a GPU.

    .venv/bin/python bench/scale.py images [--sizes 437,2000,10000] [--kind synthetic|augmented]
        [--data ../shared/datasets/athletes] [--arch simple_cnn] [--stages scan,audit,...]
        [--workdir /tmp/scale] [--repeats 1] [--faces-sample 100] [--heavy-max 2000]
        [--merge earlier.json] [--out results.json]
    .venv/bin/python bench/scale.py procs DATA [--arch simple_cnn] [--nprocs 1,2] [--epochs 2]
        [--repeats 1] [--device cpu]
    .venv/bin/python bench/scale.py device DATA [--quick] [--archs simple_cnn,...] [--ratio-arch A]
        [--ratio-epochs 2] [--cpu-cap 60] [--gpu-cap 150] [--gpu cuda]

**images** (issue 15's "cost linear in the number of images"): one fresh process per folder times
compare's stages one after the other, each through the library call compare makes:

* ``scan``: list, hash and decode every file (draft mode) and fingerprint it (SIFT + pHash);
* ``audit``: exact and near-duplicate search over the fingerprints, groups, label conflicts;
* ``split``: the group-aware stratified split;
* ``decode``: the training cache at 224 px, cold (a fresh cache directory under the workdir);
* ``faces``: the face survey (dlib, cold cache), timed on ``--faces-sample`` images spread over
  the folder and scaled to its size (each image is analysed on its own, so the cost per image is
  what matters; a photo without a face runs the whole cascade, CNN included, and costs ~10x one
  where HOG finds a face at once);
* ``train``: one model (``--arch``, default simple_cnn) for ONE epoch per phase (``epochs=1``),
  decoding at its own input size, building and saving the model included: a full compare runs
  each recipe's 10-150 epochs of four models. Only on folders up to ``--heavy-max`` images;
* ``score``: the saved model on the test split (decode + forward), as compare's step 4 does first.

Folders of ``--sizes`` images are made by ``bench/folders.py`` under ``--workdir`` (224 px,
synthetic distinct scenes by default); the size equal to the athletes count is also timed on the
athletes photos themselves (larger JPEGs: decoding costs more per image). For each stage the
table gives seconds per size, the slope (seconds per 1,000 images, least squares) and the growth
exponent between the two largest sizes, log(t2/t1)/log(n2/n1): 1 is linear, 2 quadratic; the
baseline is the smallest size measured in the same run. The load average is printed with every
timing (other work on the machine inflates them).

**procs** (1 vs N processes): ``python -m torch.distributed.run --standalone --nproc_per_node=N -m
image_classifier train DATA --arch A --out DIR --no-progress --device D --split S`` for each N on
one split and a warm decode cache; reports wall time, training seconds and images/s from the card
(``train_seconds``, ``history[i]["images_per_s"]``, ``distributed``), and the ratio to N=1.

**device** (GPU vs CPU): ``--quick`` trains the four models with their default recipes on
``--device cuda`` (training seconds and images/s each, and the total against the 2-minute target),
then one short model (``--ratio-arch``, 2 epochs) on cuda and on the CPU cores, the CPU run capped
at ``--cpu-cap`` seconds (then its images/s is from the epochs it finished), and prints the ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ATHLETES = SHARED / "datasets" / "athletes"
STAGES = ("scan", "audit", "split", "decode", "faces", "train", "score")
ARCHS = ("simple_cnn", "alexnet_like", "mobilenet_v2", "resnet50")

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The caller's PYTHONPATH wins (e.g. another checkout's src/); else this checkout's.
    env["PYTHONPATH"] = env.get("PYTHONPATH") or str(ROOT / "src")
    env.setdefault("IMAGE_CLASSIFIER_WEIGHTS", str(SHARED / "weights"))
    return env


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# images: compare's stages, one fresh process per folder
# --------------------------------------------------------------------------------------------
def stages_worker(args: argparse.Namespace) -> dict:
    """Time compare's stages on one folder (run in its own process); returns a JSON-able dict."""
    from image_classifier.data.check import audit_dataset
    from image_classifier.data.scan import scan_dataset
    from image_classifier.data.split import make_split
    from image_classifier.models.registry import get_arch
    from image_classifier.training import ImageCache, TrainOptions, train_model

    work = Path(tempfile.mkdtemp(prefix="scale-", dir=args.workdir))
    out: dict = {"data": str(args.data), "stages": {}, "load": {}}
    wanted = set(args.stages)

    def timed(name, fn):
        load = _load()
        t0 = time.perf_counter()
        result = fn()
        out["stages"][name] = time.perf_counter() - t0
        out["load"][name] = load
        print(f"  {Path(args.data).name}: {name} {out['stages'][name]:.2f} s (load {load})",
              file=sys.stderr, flush=True)
        return result

    try:
        scan = timed("scan", lambda: scan_dataset(args.data, fingerprints="audit" in wanted))
        out["images"] = len(scan.records)
        audit = timed("audit", lambda: audit_dataset(args.data, scan=scan,
                                                     near_duplicates="audit" in wanted))
        out["near_duplicate_groups"] = len(audit.near_duplicate_groups)
        out["images_in_groups"] = sum(len(g) for g in audit.groups)
        out["candidates"] = {k: c.to_json() for k, c in audit.near_duplicate_candidates.items()}
        for r in audit.records:  # free the thumbnails and descriptors before training
            r.fingerprint = None
        split = timed("split", lambda: make_split(args.data, seed=0, audit=audit))
        cache = ImageCache(work / "decoded")
        if "decode" in wanted:
            prep = get_arch("mobilenet_v2").preprocessing  # 224 px, the transfer models' input
            timed("decode", lambda: cache.decode(split.records, prep))
        if "faces" in wanted:
            from image_classifier.faces import FaceCache, survey_faces

            # dlib costs ~0.1 s (a face found at once) to >1 s (no face: the whole cascade, CNN
            # included) per image, each image on its own: a sample of --faces-sample images, spread
            # over the folder, scaled to the folder's size (marked "extrapolated" in the table).
            step = max(1, len(audit.records) // args.faces_sample) if args.faces_sample else 1
            sample = audit.records[::step]
            survey = timed("faces", lambda: survey_faces(sample, FaceCache(work / "faces")))
            out["faces_sampled"] = len(sample)
            out["stages"]["faces"] *= len(audit.records) / len(sample)
            print(f"  {Path(args.data).name}: faces on {len(sample)} images, scaled to "
                  f"{len(audit.records)}: {out['stages']['faces']:.1f} s", file=sys.stderr, flush=True)
            out["with_face"] = f"{survey.with_face}/{len(sample)}"
        if "train" in wanted or "score" in wanted:
            options = TrainOptions(args.arch, out=work / "model", epochs=1, progress=False,
                                   weights=args.weights)
            result = timed("train", lambda: train_model(split, options, cache=cache))
            out["train_images_per_s"] = [h.get("images_per_s") for h in result.history]
            out["train_images"] = len(split.subset("train"))
        if "score" in wanted:
            from image_classifier.evaluate.evaluation import LabelledImage, predict_items
            from image_classifier.inference.loading import load_model

            def score():
                classifier = load_model(work / "model", backend="torch")
                items = [LabelledImage.from_record(r) for r in split.subset("test")]
                return predict_items(classifier, items)

            timed("score", score)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in [s for s in STAGES if s not in out["stages"]]:
        out["stages"][name] = None
    return out


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares seconds per 1,000 images."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] / 1000 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else None


def _exponent(points: list[tuple[int, float]]) -> float | None:
    """Growth exponent between the two largest sizes: 1 linear, 2 quadratic."""
    if len(points) < 2:
        return None
    (n1, t1), (n2, t2) = sorted(points)[-2:]
    if n1 == n2 or t1 <= 0 or t2 <= 0:
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


def run_images(args: argparse.Namespace) -> int:
    from folders import make_folder

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    folders: list[tuple[str, Path]] = []
    for n in args.sizes:
        folder = workdir / f"{args.kind}{n}"
        t0 = time.perf_counter()
        make_folder(folder, n, kind=args.kind, source=args.data)
        print(f"folder {folder}: {n} images ({time.perf_counter() - t0:.1f} s to make or find)",
              file=sys.stderr, flush=True)
        folders.append((f"{args.kind} {n}", folder))
    if args.data and not args.no_source:
        folders.insert(0, (f"{args.data.name} (source photos)", args.data))
    runs = []
    for path in args.merge:  # earlier runs' results (--out of this command), shown in the same tables
        runs += json.loads(Path(path).read_text())
    for label, folder in folders:
        samples = []
        n_files = sum(1 for f in folder.rglob("*") if f.is_file())
        stages = [s for s in args.stages
                  if s not in ("train", "score") or not args.heavy_max or n_files <= args.heavy_max]
        for _ in range(args.repeats):
            cmd = [sys.executable, __file__, "_stages", str(folder), "--arch", args.arch,
                   "--stages", ",".join(stages), "--workdir", str(workdir),
                   "--faces-sample", str(args.faces_sample)]
            if args.weights:
                cmd += ["--weights", str(args.weights)]
            # The worker's log (stage times, training's epoch lines) goes straight to our stderr.
            proc = subprocess.run(cmd, env=_env(), stdout=subprocess.PIPE, text=True)
            if proc.returncode:
                print(f"{label}: worker failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        run = samples[0]
        run["label"] = label
        run["stages"] = {s: (statistics.median([x["stages"][s] for x in samples])
                             if samples[0]["stages"].get(s) is not None else None) for s in STAGES}
        runs.append(run)

    stages = [s for s in STAGES if any(r["stages"][s] is not None for r in runs)]
    print(f"\n### compare's stages vs number of images ({args.arch} for train/score, 1 epoch per phase; "
          f"median of {args.repeats}; load average 1/5 min at each stage's start)\n")
    faces_note = (f"faces s (from {args.faces_sample}, scaled)" if args.faces_sample else "faces s")
    header = (["folder", "images"] + [faces_note if s == "faces" else f"{s} s" for s in stages]
              + ["total s", "load (scan..score)"])
    rows = []
    for r in runs:
        times = [r["stages"][s] for s in stages]
        loads = [r["load"].get(s, "") for s in stages]
        rows.append([r["label"], r["images"]] + [f"{t:.2f}" if t is not None else "-" for t in times]
                    + [f"{sum(t for t in times if t):.1f}", f"{loads[0]} .. {loads[-1]}"])
    print(_md_table(header, rows))
    # The curve: the generated folders only (same kind of JPEG at every size).
    curve = [r for r in runs if not r["label"].endswith("(source photos)")]
    if len(curve) >= 2:
        print(f"\n### slope and growth ({args.kind} folders only, sizes "
              f"{', '.join(str(r['images']) for r in curve)})\n")
        srows = []
        common = [s for s in stages if all(r["stages"].get(s) is not None for r in curve)]
        for s in stages + ["total"]:
            pts = [(r["images"], (sum(r["stages"][c] for c in common) if s == "total"
                                  else r["stages"].get(s))) for r in curve]
            pts = [(n, t) for n, t in pts if t is not None]
            slope, expo = _slope(pts), _exponent(pts)
            per_k = [f"{1000 * t / n:.2f}" for n, t in pts]
            if expo is None:
                verdict = ""
            elif max(t for _, t in pts) < 1.0:  # sub-second stages: load and GC noise dominate
                verdict = "too small to judge (< 1 s)"
            else:
                verdict = "linear" if expo < 1.25 else "SUPERLINEAR" if expo < 1.6 else "QUADRATIC?"
            srows.append([s, f"{slope:.2f}" if slope is not None else "-", " / ".join(per_k),
                          f"{expo:.2f}" if expo is not None else "-", verdict])
        print(f"(total: {' + '.join(common)}, the stages timed at every size)\n")
        print(_md_table(["stage", "slope s / 1,000 images", "s per 1,000 at each size",
                         "growth exponent (largest two)", "verdict"], srows))
    dup = [[r["label"], r.get("near_duplicate_groups", "-"), r.get("images_in_groups", "-"),
            r.get("with_face", "-"),
            "; ".join(f"{k} {v['considered']}/{v['accepted']}" for k, v in r.get("candidates", {}).items())]
           for r in runs]
    print("\n### near-duplicate audit on these folders\n")
    print(_md_table(["folder", "near-dup groups", "images in duplicate groups", "faces found (sample)",
                     "candidates considered/accepted"], dup))
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=2))
    return 0


# --------------------------------------------------------------------------------------------
# procs: 1 vs N processes through torchrun
# --------------------------------------------------------------------------------------------
def _prepare(data: Path, arch: str, work: Path) -> tuple[Path, Path]:
    """One split for every run, and the decode cache warmed at the model's input size."""
    from image_classifier.data.split import make_split
    from image_classifier.models.registry import get_arch
    from image_classifier.training import ImageCache

    split = make_split(data, seed=0)
    split_csv = work / "split.csv"
    split.save(split_csv)
    cache_dir = work / "decoded"
    ImageCache(cache_dir).decode(split.records, get_arch(arch).preprocessing)
    return split_csv, cache_dir


def _train_cmd(nproc: int | None, data: Path, arch: str, out: Path, device: str, split_csv: Path,
               cache_dir: Path, epochs: int | None) -> list[str]:
    if nproc is None:  # plain single process, no launcher
        cmd = [sys.executable, "-m", "image_classifier"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "image_classifier"]
    cmd += ["train", str(data), "--arch", arch, "--out", str(out), "--no-progress", "--device", device,
            "--split", str(split_csv), "--cache-dir", str(cache_dir), "--force"]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    return cmd


def _run_train(cmd: list[str], timeout: float | None = None) -> tuple[float, int, str]:
    load = _load()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as err:  # the partial output is bytes on POSIX, str elsewhere
        rc = 124
        tail = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                       for x in (err.stdout, err.stderr))[-3000:]
    wall = time.perf_counter() - t0
    print(f"  {' '.join(cmd[2:8])}...: {wall:.1f} s, exit {rc} (load {load})", file=sys.stderr, flush=True)
    return wall, rc, tail


def _card_numbers(model_dir: Path) -> dict:
    card = json.loads((model_dir / "model.json").read_text())
    hist = card.get("history") or []
    ips = [h["images_per_s"] for h in hist if h.get("images_per_s")]
    return {"train_seconds": card.get("train_seconds"), "epochs": len(hist),
            "images_per_s": statistics.median(ips) if ips else None,
            "distributed": card.get("distributed"),
            "device": " ".join(str(v) for v in ((card.get("device") or {}).get("device"),
                                                (card.get("device") or {}).get("name")) if v)}


def run_procs(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="scale-procs-", dir=args.workdir))
    split_csv, cache_dir = _prepare(args.data, args.arch, work)
    results: dict[int, list[dict]] = {n: [] for n in args.nprocs}
    for _ in range(args.repeats):
        for n in args.nprocs:  # interleaved, so a change in machine load hits every N alike
            out = work / f"model-n{n}"
            wall, rc, tail = _run_train(_train_cmd(n or None, args.data, args.arch, out, args.device, split_csv,
                                                   cache_dir, args.epochs))
            if rc:
                print(f"nproc {n} failed (exit {rc}):\n{tail}", file=sys.stderr)
                return 1
            results[n].append({"wall": wall, **_card_numbers(out)})
    base = statistics.median(r["wall"] for r in results[args.nprocs[0]])
    rows = []
    for n, rs in results.items():
        wall = statistics.median(r["wall"] for r in rs)
        ts = statistics.median(r["train_seconds"] for r in rs)
        ips = statistics.median(r["images_per_s"] for r in rs if r["images_per_s"])
        dist = rs[0]["distributed"]
        rows.append([n or "1 (plain, no torchrun)", f"{wall:.1f}", f"{ts:.1f}", f"{ips:.1f}", rs[0]["epochs"],
                     f"{base / wall:.2f}x",
                     f"{dist['world_size']} / {dist['backend']}" if dist else "none"])
    print(f"\n### 1 vs N processes: {args.arch}, {args.epochs} epoch(s) per phase, --device {args.device}, "
          f"{os.cpu_count()} CPU cores, median of {args.repeats}\n")
    print(_md_table(["processes", "wall s", "train s (card)", "images/s (card, median epoch)", "epochs",
                     f"speed-up vs {args.nprocs[0] or 'plain'}", "distributed (card)"], rows))
    if (os.cpu_count() or 1) <= 2:
        print(f"\nOn {os.cpu_count()} cores the processes share the same cores: one process already "
              "uses both through PyTorch's intra-op threads, so N processes split the cores between "
              "them (fewer threads each) and add gradient all-reduces; expect no speed-up here. "
              "More processes pay off with one GPU per process or more machines.")
    shutil.rmtree(work, ignore_errors=True)
    return 0


# --------------------------------------------------------------------------------------------
# device: the GPU against the CPU cores
# --------------------------------------------------------------------------------------------
def run_device(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="scale-device-", dir=args.workdir))
    rows, total = [], 0.0
    split_csv = cache_dir = None
    archs = args.archs if args.quick or args.archs else []
    for arch in archs:
        split_csv, cache_dir = _prepare(args.data, arch, work)
        out = work / f"gpu-{arch}"
        wall, rc, tail = _run_train(_train_cmd(None, args.data, arch, out, args.gpu, split_csv, cache_dir, None),
                                    timeout=args.gpu_cap)
        if rc:
            print(f"{arch} on {args.gpu} failed (exit {rc}):\n{tail}", file=sys.stderr)
            rows.append([arch, f"capped at {args.gpu_cap:.0f} s" if rc == 124 else f"failed (exit {rc})",
                         f"{wall:.1f}", "", "", ""])
            continue
        c = _card_numbers(out)
        total += c["train_seconds"] or 0
        rows.append([arch, f"{c['train_seconds']:.1f}", f"{wall:.1f}", c["epochs"],
                     f"{c['images_per_s']:.0f}" if c["images_per_s"] else "-", c["device"]])
    if rows:
        print(f"\n### default recipes on --device {args.gpu} ({args.data.name}, "
              f"{sum(1 for _ in args.data.rglob('*.*'))} files)\n")
        print(_md_table(["model", "train s (card)", "wall s (process)", "epochs", "images/s (median epoch)",
                         "device (card)"], rows))
        print(f"\nTotal training time: {total:.1f} s (target: under 120 s for the four-model compare)")

    arch = args.ratio_arch
    split_csv, cache_dir = _prepare(args.data, arch, work)
    res: dict[str, dict] = {}
    for key, device, cap in (("accelerator", args.gpu, args.gpu_cap), ("cpu", "cpu", args.cpu_cap)):
        out = work / f"ratio-{key}"
        wall, rc, tail = _run_train(_train_cmd(None, args.data, arch, out, device, split_csv, cache_dir, args.ratio_epochs),
                                    timeout=cap)
        if rc == 0:
            res[key] = {"wall": wall, **_card_numbers(out), "capped": False}
        elif rc == 124:
            res[key] = {"wall": wall, "capped": True, "images_per_s": _epoch_rate(tail)}
        else:
            print(f"{device} run failed (exit {rc}):\n{tail}", file=sys.stderr)
            return 1
    print(f"\n### --device {args.gpu} vs cpu: {arch}, {args.ratio_epochs} epoch(s) per phase, same split and warm decode cache\n")
    rrows = []
    for key, r in res.items():
        rrows.append([f"{args.gpu if key == 'accelerator' else 'cpu'} ({r.get('device') or 'capped'})",
                      f"{r['wall']:.1f}" + (" (capped)" if r["capped"] else ""),
                      f"{r['train_seconds']:.1f}" if r.get("train_seconds") else "-",
                      f"{r['images_per_s']:.0f}" if r.get("images_per_s") else "-"])
    print(_md_table(["device", "wall s", "train s (card)", "images/s (median epoch)"], rrows))
    g, c = res.get("accelerator", {}).get("images_per_s"), res.get("cpu", {}).get("images_per_s")
    if g and c:
        print(f"\nGPU / CPU training images/s: {g / c:.1f}x ({os.cpu_count()} CPU cores)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _epoch_rate(log_tail: str) -> float | None:
    """images/s from the per-epoch lines a capped run printed (``... N img/s``), if any."""
    import re

    rates = [float(m) for m in re.findall(r"([0-9.]+) ?(?:img|images)/s", log_tail)]
    return statistics.median(rates) if rates else None


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    csv_ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    csv = lambda s: [x for x in s.split(",") if x]  # noqa: E731

    p = sub.add_parser("images", help="compare's stages vs the number of images")
    p.add_argument("--sizes", type=csv_ints, default=[437, 2000, 10000])
    p.add_argument("--kind", choices=("synthetic", "augmented"), default="synthetic")
    p.add_argument("--data", type=Path, default=ATHLETES, help="source photos (timed too, and "
                   "the classes and, for --kind augmented, the pictures of the generated folders)")
    p.add_argument("--no-source", action="store_true", help="do not time the source folder itself")
    p.add_argument("--arch", default="simple_cnn")
    p.add_argument("--weights", type=Path)
    p.add_argument("--stages", type=csv, default=list(STAGES))
    p.add_argument("--workdir", default="/tmp/scale")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--faces-sample", type=int, default=100, help="images the face survey is timed on "
                   "per folder, scaled to the folder's size (0: all)")
    p.add_argument("--heavy-max", type=int, default=2000, help="time train and score only on folders "
                   "of at most this many images (an epoch is n/batch steps: linear by construction, "
                   "and 10,000 images of simple_cnn's 244 M-parameter Adam steps take ~20 min "
                   "on 2 cores); 0: on every folder")
    p.add_argument("--merge", action="append", default=[], help="JSON written by an earlier --out: "
                   "its folders join the tables")
    p.add_argument("--out")

    w = sub.add_parser("_stages", help=argparse.SUPPRESS)
    w.add_argument("data", type=Path)
    w.add_argument("--arch", default="simple_cnn")
    w.add_argument("--weights", type=Path)
    w.add_argument("--stages", type=csv, default=list(STAGES))
    w.add_argument("--workdir", default="/tmp/scale")
    w.add_argument("--faces-sample", type=int, default=100)

    q = sub.add_parser("procs", help="1 vs N processes (torchrun)")
    q.add_argument("data", type=Path)
    q.add_argument("--arch", default="simple_cnn")
    q.add_argument("--nprocs", type=csv_ints, default=[1, 2],
                   help="process counts; 0 = one plain process without the launcher")
    q.add_argument("--epochs", type=int, default=2, help="epochs per phase")
    q.add_argument("--device", default="cpu")
    q.add_argument("--repeats", type=int, default=1)
    q.add_argument("--workdir", default="/tmp")

    d = sub.add_parser("device", help="the GPU against the CPU cores")
    d.add_argument("data", type=Path)
    d.add_argument("--quick", action="store_true", help="the four models on cuda, then the ratio")
    d.add_argument("--archs", type=csv, default=None)
    d.add_argument("--ratio-arch", default="simple_cnn")
    d.add_argument("--ratio-epochs", type=int, default=2)
    d.add_argument("--cpu-cap", type=float, default=60.0, help="seconds the CPU run may take")
    d.add_argument("--gpu-cap", type=float, default=150.0, help="seconds one GPU run may take (a "
                   "model's whole default recipe in --quick)")
    d.add_argument("--gpu", default="cuda", help="the accelerator's --device (cuda, cuda:1; cpu only "
                   "to try this script on a machine without one)")
    d.add_argument("--workdir", default="/tmp")

    args = parser.parse_args(argv)
    if args.command == "_stages":
        import logging

        logging.basicConfig(level=logging.INFO, format="    %(name)s: %(message)s", stream=sys.stderr)
        print(json.dumps(stages_worker(args)))
        return 0
    if args.command == "images":
        unknown = set(args.stages) - set(STAGES)
        if unknown:
            parser.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
        return run_images(args)
    if args.command == "procs":
        return run_procs(args)
    if args.command == "device" and args.quick and not args.archs:
        args.archs = list(ARCHS)
    return run_device(args)


if __name__ == "__main__":
    sys.exit(main())
