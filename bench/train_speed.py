"""Training speed: a naive PyTorch loop vs ``image-classifier train``, same split, seeds and recipes.

    .venv/bin/python bench/train_speed.py [--data ../shared/datasets/athletes] [--archs simple_cnn,...]
        [--naive-epochs N] [--tool-only | --naive-only] [--out results.json]

(a) **naive**: the study's recipes written the way a typical user writes them: a folder-style
    ``Dataset`` that opens and decodes every JPEG every epoch (``Image.open(...).convert("RGB")``),
    torchvision ``transforms.v2`` (Resize, RandomAffine, RandomHorizontalFlip, Normalize) per image,
    ``DataLoader(batch_size=32, shuffle=True)`` with its defaults, fp32, ``torch.optim.Adam`` with
    its defaults, PyTorch's default threads and glibc's default malloc; frozen layers get
    ``requires_grad=False`` but still run forward every step. Same networks (the registry's), same
    recipe (phases, epochs, LR, early stopping, ReduceLROnPlateau), same split, same seed.
(b) **tool**: :func:`image_classifier.training.train_model` with the architecture's default recipe.

Each side of each architecture runs in its own fresh process (the tool's allocator and thread
settings are process-wide and must not leak into the naive side). Reported per architecture and
phase: training images per second (training images x epochs / phase wall time, validation
included), seconds per epoch, epochs run; per architecture: total training time (wall time of the
training call: decoding, feature caching and validation included; test evaluation excluded),
best validation accuracy, test accuracy (the saved/best model on the test split), peak RSS.

``--naive-epochs N`` caps every naive phase at N epochs and *extrapolates* its time (the first
epoch, which pays one-time warm-up, plus the median of the later epochs for each further epoch; use
N >= 3); the table marks these numbers "extrapolated" and its accuracies "after N epochs". Each
side trains once per architecture (a full training is the unit measured; its epochs are the
repeated samples); run the script on an otherwise idle machine. Totals are compared at equal epoch counts (the naive seconds per epoch x the epochs the
tool ran) and, separately, naive at the recipe's full epoch count.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEFAULT_WEIGHTS = {
    "mobilenet_v2": SHARED / "weights" / "mobilenet_v2-b0353104.pth",
    "resnet50": SHARED / "weights" / "resnet50-keras-imagenet.pth",
}
ARCHS = ("simple_cnn", "alexnet_like", "mobilenet_v2", "resnet50")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------
# (a) The naive loop. Deliberately plain: this is the baseline, not something to optimise.
# --------------------------------------------------------------------------------------------
def naive_worker(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    from image_classifier.data.split import load_split
    from image_classifier.models.registry import build_model, get_arch

    split = load_split(args.split, args.data)
    spec = get_arch(args.arch)
    recipe = _recipe(args.arch, args.set_)
    prep = spec.preprocessing
    size = prep.input_size
    aug = recipe.augmentation

    class FolderDataset(Dataset):
        def __init__(self, records, transform):
            self.items = [(str(r.path), r.label) for r in records]
            self.transform = transform

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            path, label = self.items[i]
            image = Image.open(path).convert("RGB")
            return self.transform(image), label

    normalize = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(prep.mean), list(prep.std))]
    train_tf = v2.Compose([
        v2.Resize((size, size)),
        v2.RandomAffine(degrees=aug.rotation, translate=(aug.width_shift, aug.height_shift),
                        scale=(1 - aug.zoom, 1 + aug.zoom), shear=aug.shear),
        v2.RandomHorizontalFlip(),
        *normalize,
    ])
    eval_tf = v2.Compose([v2.Resize((size, size)), *normalize])

    torch.manual_seed(args.seed)
    train_loader = DataLoader(FolderDataset(split.subset("train"), train_tf), batch_size=recipe.batch_size, shuffle=True)
    val_loader = DataLoader(FolderDataset(split.subset("val"), eval_tf), batch_size=recipe.batch_size)
    test_loader = DataLoader(FolderDataset(split.subset("test"), eval_tf), batch_size=recipe.batch_size)

    t_start = time.perf_counter()
    pretrained = spec.pretrained is not None
    model, _ = build_model(args.arch, len(split.classes), pretrained=pretrained, weights=args.weights_file)

    def evaluate(loader):
        model.eval()
        loss_sum, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for x, y in loader:
                out = model(x)
                loss_sum += F.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(1) == y).sum().item()
                n += len(y)
        return loss_sum / n, correct / n

    n_train = len(train_loader.dataset)
    best_loss, best_state, best_val_acc = math.inf, None, 0.0
    phases = []
    for phase in recipe.phases:
        model.set_trainable_from(phase.trainable_from)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=phase.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=recipe.plateau_factor, patience=recipe.plateau_patience, min_lr=recipe.min_lr)
        max_epochs = phase.epochs if args.naive_epochs is None else min(phase.epochs, args.naive_epochs)
        phase_best, bad, epoch_seconds = math.inf, 0, []
        for epoch in range(max_epochs):
            t0 = time.perf_counter()
            model.train()
            for x, y in train_loader:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
            val_loss, val_acc = evaluate(val_loader)
            scheduler.step(val_loss)
            epoch_seconds.append(time.perf_counter() - t0)
            print(f"naive {args.arch} {phase.name} epoch {epoch + 1}: val loss {val_loss:.4f} acc {val_acc:.3f} "
                  f"({epoch_seconds[-1]:.1f} s)", file=sys.stderr, flush=True)
            if val_loss < best_loss:
                best_loss, best_val_acc, best_state = val_loss, val_acc, copy.deepcopy(model.state_dict())
            if val_loss < phase_best:
                phase_best, bad = val_loss, 0
            else:
                bad += 1
                if bad >= recipe.early_stopping_patience:
                    break
        model.load_state_dict(best_state)
        phases.append({"name": phase.name, "epochs": len(epoch_seconds), "recipe_epochs": phase.epochs,
                       "seconds": sum(epoch_seconds), "epoch_seconds": epoch_seconds,
                       "capped": args.naive_epochs is not None and len(epoch_seconds) == max_epochs < phase.epochs})
    train_seconds = time.perf_counter() - t_start
    _, test_acc = evaluate(test_loader)
    for p in phases:
        p["images_per_s"] = n_train * p["epochs"] / p["seconds"]
    return {"side": "naive", "arch": args.arch, "n_train": n_train, "phases": phases, "train_seconds": train_seconds,
            "best_val_accuracy": best_val_acc, "best_val_loss": best_loss, "test_accuracy": test_acc,
            "peak_rss_mb": _peak_rss_mb(), "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------
# (b) The tool.
# --------------------------------------------------------------------------------------------
def tool_worker(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from image_classifier import load_model
    from image_classifier.data.split import load_split
    from image_classifier.training import train_model

    split = load_split(args.split, args.data)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        t0 = time.perf_counter()
        # Default checkpointing (what `image-classifier train` does): its cost is part of the time.
        result = train_model(split, args.arch, Path(tmp) / args.arch, weights=args.weights_file, seed=args.seed,
                             progress=False, set=_overrides(args.set_, args.arch) or None)
        wall = time.perf_counter() - t0
        model = load_model(Path(tmp) / args.arch)
        test = split.subset("test")
        probs = model.predict_proba([str(r.path) for r in test])
        test_acc = float(np.mean(probs.argmax(1) == np.array([r.label for r in test])))
    phases = [{**p, "recipe_epochs": next(ph.epochs for ph in _recipe(args.arch, args.set_).phases if ph.name == p["name"])}
              for p in result.phases]
    return {"side": "tool", "arch": args.arch, "n_train": result.card.data["train_images"], "phases": phases,
            "train_seconds": wall, "best_val_accuracy": result.best_val_accuracy,
            "best_val_loss": result.best_val_loss, "test_accuracy": test_acc,
            "peak_rss_mb": result.peak_rss_mb, "threads": torch.get_num_threads(),
            "precision": result.card.precision, "best_epoch": result.best_epoch}


def _overrides(items: list[str], arch: str) -> dict[str, str]:
    """--set KEY=VALUE for every architecture, ARCH:KEY=VALUE for one."""
    from image_classifier.recipe import parse_set_options

    out = {}
    for key, value in parse_set_options(items).items():
        scope, colon, rest = key.partition(":")
        if not colon:
            out[key] = value
        elif scope == arch:
            out[rest] = value
    return out


def _recipe(arch: str, items: list[str] | None = None):
    from image_classifier.models.registry import get_arch

    return get_arch(arch).default_recipe().with_overrides(_overrides(items or [], arch))


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def run_worker(side: str, arch: str, args: argparse.Namespace, split_csv: Path) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    cmd = [sys.executable, __file__, "--worker", side, "--arch", arch, "--split", str(split_csv),
           "--data", str(args.data), "--seed", str(args.seed), "--json-out", str(out)]
    weights = args.weight_files.get(arch)
    if weights:
        cmd += ["--weights-file", str(weights)]
    if args.naive_epochs is not None:
        cmd += ["--naive-epochs", str(args.naive_epochs)]
    for item in args.set_:
        cmd += ["--set", item]
    print(f"--- {side} {arch} ...", flush=True)
    proc = subprocess.run(cmd, stdout=sys.stderr if args.verbose else subprocess.DEVNULL,
                          stderr=sys.stderr if args.verbose else subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} {arch} failed:\n{proc.stderr[-3000:] if proc.stderr else ''}")
    result = json.loads(out.read_text())
    out.unlink()
    return result


def weight_files(items: list[str]) -> dict[str, Path]:
    """ImageNet weights per architecture: ../shared/weights/ files that exist, overridden by ARCH=PATH items."""
    files = {k: v for k, v in DEFAULT_WEIGHTS.items() if v.is_file()}
    for item in items:
        arch, _, path = item.partition("=")
        files[arch] = Path(path)
    return files


def _naive_phase_time(phase: dict, epochs: int) -> float:
    """Naive seconds for ``epochs`` epochs of a phase from the epochs it ran: the first epoch (which
    pays one-time warm-up) once, then the median of the later ones (the first one alone if it ran once)."""
    import statistics

    times = phase["epoch_seconds"]
    if epochs <= len(times):
        return sum(times[:epochs])
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return times[0] + steady * (epochs - 1)


def summarize(naive: dict | None, tool: dict | None) -> dict:
    """Per-phase and total comparison of one architecture."""
    rows = []
    names = [p["name"] for p in (tool or naive)["phases"]]
    for name in names:
        n = next((p for p in (naive or {}).get("phases", []) if p["name"] == name), None)
        t = next((p for p in (tool or {}).get("phases", []) if p["name"] == name), None)
        row = {"phase": name}
        if n:
            row.update(naive_images_per_s=n["images_per_s"], naive_s_per_epoch=n["seconds"] / n["epochs"],
                       naive_epochs=n["epochs"], naive_capped=n["capped"], recipe_epochs=n["recipe_epochs"])
        if t:
            row.update(tool_images_per_s=t["images_per_s"], tool_s_per_epoch=t["seconds"] / t["epochs"],
                       tool_epochs=t["epochs"], recipe_epochs=t["recipe_epochs"])
        if n and t:
            row["speedup"] = t["images_per_s"] / n["images_per_s"]
            row["naive_seconds_at_tool_epochs"] = _naive_phase_time(n, t["epochs"])
        rows.append(row)
    summary = {"phases": rows}
    if naive:
        capped = any(p["capped"] for p in naive["phases"])
        full = sum(_naive_phase_time(p, p["recipe_epochs"]) for p in naive["phases"])
        summary.update(naive_seconds=naive["train_seconds"], naive_capped=capped,
                       naive_seconds_full_recipe_extrapolated=full if capped else None,
                       naive_val_accuracy=naive["best_val_accuracy"], naive_test_accuracy=naive["test_accuracy"],
                       naive_peak_rss_mb=naive["peak_rss_mb"])
    if tool:
        summary.update(tool_seconds=tool["train_seconds"], tool_val_accuracy=tool["best_val_accuracy"],
                       tool_test_accuracy=tool["test_accuracy"], tool_peak_rss_mb=tool["peak_rss_mb"],
                       tool_precision=tool.get("precision"))
    if naive and tool:
        # Same epochs on both sides: naive seconds per epoch x the epochs the tool ran, plus the
        # naive run's time outside epochs (model building).
        outside = naive["train_seconds"] - sum(p["seconds"] for p in naive["phases"])
        equal = outside + sum(r.get("naive_seconds_at_tool_epochs", 0.0) for r in rows)
        summary["naive_seconds_at_tool_epochs"] = equal
        summary["speedup_at_equal_epochs"] = equal / tool["train_seconds"]
        if not summary["naive_capped"]:
            summary["speedup_end_to_end"] = naive["train_seconds"] / tool["train_seconds"]
    return summary


def _fmt(v, spec=".1f", none="-"):
    return none if v is None else format(v, spec)


def print_table(results: dict, args: argparse.Namespace) -> None:
    capped_note = f" (naive capped at {args.naive_epochs} epochs/phase; its times are extrapolated)" if args.naive_epochs else ""
    print(f"\nTraining speed, naive vs tool{capped_note}")
    hdr = f"{'arch':<13} {'phase':<9} {'naive img/s':>11} {'tool img/s':>10} {'ratio':>6} {'naive s/ep':>10} {'tool s/ep':>9} {'epochs n/t (recipe)':>20}"
    print(hdr)
    print("-" * len(hdr))
    for arch, s in results["archs"].items():
        for r in s["summary"]["phases"]:
            epochs = f"{r.get('naive_epochs', '-')}{'*' if r.get('naive_capped') else ''}/{r.get('tool_epochs', '-')} ({r.get('recipe_epochs', '-')})"
            print(f"{arch:<13} {r['phase']:<9} {_fmt(r.get('naive_images_per_s')):>11} {_fmt(r.get('tool_images_per_s')):>10} "
                  f"{_fmt(r.get('speedup'), '.1f') + ('x' if r.get('speedup') else ''):>6} {_fmt(r.get('naive_s_per_epoch')):>10} "
                  f"{_fmt(r.get('tool_s_per_epoch'), '.2f'):>9} {epochs:>20}")
    print("  * = naive phase capped by --naive-epochs\n")
    hdr2 = (f"{'arch':<13} {'naive time':>11} {'naive@tool ep':>13} {'tool time':>9} {'ratio':>6}  "
            f"{'val acc n/t':<12} {'test acc n/t':<13} {'peak RSS MB n/t':<15}")
    print(hdr2)
    print("-" * len(hdr2))
    tot = {"naive_full": 0.0, "naive_eq": 0.0, "tool": 0.0}
    for arch, s in results["archs"].items():
        m = s["summary"]
        naive_time = m.get("naive_seconds_full_recipe_extrapolated") or m.get("naive_seconds")
        if naive_time is not None:
            tot["naive_full"] += naive_time
        tot["naive_eq"] += m.get("naive_seconds_at_tool_epochs") or 0.0
        tot["tool"] += m.get("tool_seconds") or 0.0
        mark = "~" if m.get("naive_capped") else ""
        star = "*" if m.get("naive_capped") else ""
        val = f"{_fmt(m.get('naive_val_accuracy'), '.3f')}{star}/{_fmt(m.get('tool_val_accuracy'), '.3f')}"
        test = f"{_fmt(m.get('naive_test_accuracy'), '.3f')}{star}/{_fmt(m.get('tool_test_accuracy'), '.3f')}"
        rss = f"{_fmt(m.get('naive_peak_rss_mb'), '.0f')}/{_fmt(m.get('tool_peak_rss_mb'), '.0f')}"
        ratio = _fmt(m.get("speedup_at_equal_epochs"), ".1f") + ("x" if m.get("speedup_at_equal_epochs") else "")
        print(f"{arch:<13} {mark + _fmt(naive_time, '.0f') + ' s':>11} {_fmt(m.get('naive_seconds_at_tool_epochs'), '.0f') + ' s':>13} "
              f"{_fmt(m.get('tool_seconds'), '.0f') + ' s':>9} {ratio:>6}  {val:<12} {test:<13} {rss:<15}")
    if tot["tool"]:
        print("-" * len(hdr2))
        ratio = f"{tot['naive_eq'] / tot['tool']:.1f}x" if tot["naive_eq"] else "-"
        full = ("~" if args.naive_epochs else "") + f"{tot['naive_full']:.0f} s"
        equal, tool_total = f"{tot['naive_eq']:.0f} s", f"{tot['tool']:.0f} s"
        print(f"{'all':<13} {full:>11} {equal:>13} {tool_total:>9} {ratio:>6}")
    print("\nnaive time: the naive run's training time (~ = extrapolated to the recipe's full epochs from the capped run);")
    print("naive@tool ep: naive seconds per epoch x the epochs the tool ran (equal work); ratio = naive@tool ep / tool time;")
    print("accuracies marked * = naive model after the capped epochs only. Threads:",
          {a: (s.get('naive') or {}).get('threads') for a, s in results['archs'].items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "datasets" / "athletes")
    ap.add_argument("--archs", default=",".join(ARCHS), help="comma-separated (default: all four)")
    ap.add_argument("--split", type=Path, help="split manifest (default: a new seed-0 split, saved next to --out)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--naive-epochs", type=int, help="cap each naive phase at N epochs and extrapolate")
    ap.add_argument("--weights", action="append", default=[], metavar="ARCH=PATH",
                    help="ImageNet weights (default: ../shared/weights/ files)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_",
                    help="recipe override for BOTH sides, ARCH:KEY=VALUE for one architecture (smoke tests only: "
                         "the results are then not the study's recipes)")
    ap.add_argument("--tool-only", action="store_true")
    ap.add_argument("--naive-only", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("train_speed.json"), help="results JSON (default: %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the workers' logs")
    # internal: one side of one architecture in this process
    ap.add_argument("--worker", choices=("naive", "tool"), help=argparse.SUPPRESS)
    ap.add_argument("--arch", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--weights-file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        if args.worker == "tool":
            import logging

            logging.basicConfig(level=logging.INFO, format="%(message)s")
            from image_classifier.runtime import configure

            configure()
        result = (naive_worker if args.worker == "naive" else tool_worker)(args)
        args.json_out.write_text(json.dumps(result, indent=2))
        return

    args.weight_files = weight_files(args.weights)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    split_csv = args.split
    if split_csv is None:
        from image_classifier.data.split import make_split

        split_csv = args.out.with_suffix(".split.csv")
        make_split(args.data, seed=args.seed).save(split_csv)
        print(f"split saved to {split_csv}")
    if args.set_:
        print(f"NOTE: recipes overridden on both sides ({', '.join(args.set_)}): not the study's recipes")
    results = {"config": {"data": str(args.data), "split": str(split_csv), "seed": args.seed, "set": args.set_,
                          "naive_epochs": args.naive_epochs, "cpu_count": os.cpu_count(),
                          "started": time.strftime("%Y-%m-%d %H:%M:%S")}, "archs": {}}
    for arch in archs:
        naive = None if args.tool_only else run_worker("naive", arch, args, split_csv)
        tool = None if args.naive_only else run_worker("tool", arch, args, split_csv)
        results["archs"][arch] = {"naive": naive, "tool": tool, "summary": summarize(naive, tool)}
        args.out.write_text(json.dumps(results, indent=2))  # partial results survive an interrupted run
    print_table(results, args)
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
