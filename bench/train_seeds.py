"""Accuracy over seeds: the naive loop trained to the full recipe vs ``image-classifier train``.

    .venv/bin/python bench/train_seeds.py --archs resnet50 --seeds 0-4 --split split.csv [--out seeds.json]
        [--tool-only | --naive-only] [--tool-seeds 0-9] [--set KEY=VALUE ...]

On 66 validation and 66 test images one image is 1.5 points, and a single training run of either
side moves by two or three images from one seed to the next, so one seed cannot say whether the
tool trains as accurately as the naive loop. This script trains both sides (the same workers as
``bench/train_speed.py``: each run in its own process, the naive side uncapped) on one split at
several seeds and prints, per architecture and side, validation and test accuracy as mean, standard
deviation and range, the median training time, and a two-sided permutation test of the difference
in mean validation and test accuracy (over every relabelling of the runs, or 100000 random
ones when there are more).

Each finished run is written to ``--out`` at once; running the same command again skips the runs
already there, so a long naive sweep (about 13 minutes per ResNet-50 seed on 2 cores) can be
interrupted and continued, or extended with more seeds.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import ARCHS, SHARED, run_worker, weight_files  # noqa: E402


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,5"`` -> [0, 2, 5]; ranges and lists mix."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        seeds.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    return sorted(set(seeds))


def permutation_p(a: list[float], b: list[float], exact_limit: int = 200_000, samples: int = 100_000) -> float:
    """Two-sided permutation p-value for mean(a) - mean(b): the share of the ways to split the pooled
    runs into groups of len(a) and len(b) whose difference is at least as large. Exact (every split)
    up to ``exact_limit`` splits, else over ``samples`` seeded random splits."""
    pooled, n = a + b, len(a)
    observed = abs(statistics.fmean(a) - statistics.fmean(b)) - 1e-12
    total = sum(pooled)

    def diff(group: Iterable[int]) -> float:
        s = sum(pooled[i] for i in group)
        return abs(s / n - (total - s) / len(b))

    if math.comb(len(pooled), n) <= exact_limit:
        splits = [diff(g) for g in itertools.combinations(range(len(pooled)), n)]
    else:
        rng = random.Random(0)
        splits = [diff(rng.sample(range(len(pooled)), n)) for _ in range(samples)]
    return sum(d >= observed for d in splits) / len(splits)


def _seed_list(seeds: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    parts = []
    for _, group in itertools.groupby(enumerate(seeds), lambda t: t[1] - t[0]):
        run = [s for _, s in group]
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def _stats(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f} [{min(values):.3f}, {max(values):.3f}]"


def _loss_stats(runs: list[dict]) -> str:
    # Runs written before the workers recorded it have no best validation loss.
    losses = [r["best_val_loss"] for r in runs if r.get("best_val_loss") is not None]
    if not losses:
        return "-"
    return f"{statistics.fmean(losses):.3f}" + (f" ({len(losses)} runs)" if len(losses) < len(runs) else "")


def print_table(runs: list[dict]) -> None:
    print(f"\n{'arch':<13} {'side':<6} {'seeds':<14} {'val acc mean ± sd [range]':<28} "
          f"{'test acc mean ± sd [range]':<28} {'median time':>11}  best val loss, mean")
    for arch in dict.fromkeys(r["arch"] for r in runs):
        by_side = {}
        for side in ("naive", "tool"):
            mine = sorted((r for r in runs if r["arch"] == arch and r["side"] == side), key=lambda r: r["seed"])
            if not mine:
                continue
            by_side[side] = mine
            seeds = _seed_list([r["seed"] for r in mine])
            print(f"{arch:<13} {side:<6} {seeds:<14} {_stats([r['best_val_accuracy'] for r in mine]):<28} "
                  f"{_stats([r['test_accuracy'] for r in mine]):<28} "
                  f"{statistics.median(r['train_seconds'] for r in mine):>9.0f} s  {_loss_stats(mine)}")
        if len(by_side) == 2:
            for key, name in (("best_val_accuracy", "val"), ("test_accuracy", "test")):
                naive = [r[key] for r in by_side["naive"]]
                tool = [r[key] for r in by_side["tool"]]
                diff = statistics.fmean(tool) - statistics.fmean(naive)
                print(f"{'':<13} tool - naive {name} accuracy: {diff:+.3f} (permutation p = {permutation_p(tool, naive):.2f})")
            speed = statistics.median(r["train_seconds"] for r in by_side["naive"]) / statistics.median(
                r["train_seconds"] for r in by_side["tool"])
            print(f"{'':<13} median training time, naive / tool: {speed:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "datasets" / "athletes")
    ap.add_argument("--split", type=Path, required=True, help="split manifest used by every run")
    ap.add_argument("--archs", default="resnet50", help="comma-separated (default: %(default)s)")
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-4"), help="e.g. 0-4 or 0,3,7 (default: 0-4)")
    ap.add_argument("--tool-seeds", type=parse_seeds, help="seeds for the tool side when they differ from --seeds")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--tool-only", action="store_true")
    only.add_argument("--naive-only", action="store_true")
    ap.add_argument("--weights", action="append", default=[], metavar="ARCH=PATH")
    ap.add_argument("--set", dest="set_", action="append", default=[], metavar="[ARCH:]KEY=VALUE",
                    help="recipe override (repeatable) as in bench/train_speed.py, read by both sides (the "
                         "naive loop has one augmentation engine, so e.g. augmentation.engine=torchvision "
                         "changes only the tool); an --out file holds runs of one set of overrides")
    ap.add_argument("--out", type=Path, default=Path("train_seeds.json"), help="runs so far (default: %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the workers' logs")
    args = ap.parse_args()
    # What run_worker reads from the namespace of train_speed.py.
    args.naive_epochs = None
    args.weight_files = weight_files(args.weights)

    if not args.split.is_file():
        ap.error(f"no split manifest at {args.split} (make one with `image-classifier split DATA --out FILE`)")
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        ap.error(f"unknown architecture(s) {unknown}; choose from {list(ARCHS)}")
    runs: list[dict] = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    other = sorted({r["split"] for r in runs} - {str(args.split)})
    if other:
        raise SystemExit(f"{args.out} holds runs on another split ({', '.join(other)}); choose another --out")
    other = sorted({" ".join(r.get("set", [])) for r in runs} - {" ".join(args.set_)})
    if other:
        raise SystemExit(f"{args.out} holds runs with other recipe overrides ({'; '.join(o or 'none' for o in other)}); "
                         "choose another --out")
    done = {(r["arch"], r["side"], r["seed"]) for r in runs}
    sides = [s for s in ("naive", "tool") if not (s == "naive" and args.tool_only) and not (s == "tool" and args.naive_only)]
    for arch in archs:
        for side in sides:
            for seed in (args.tool_seeds or args.seeds) if side == "tool" else args.seeds:
                if (arch, side, seed) in done:
                    continue
                args.seed = seed
                result = run_worker(side, arch, args, args.split)
                runs.append({**result, "seed": seed, "split": str(args.split), "set": args.set_})
                args.out.write_text(json.dumps({"runs": runs}, indent=2))
                print(f"    {side} {arch} seed {seed}: val {result['best_val_accuracy']:.3f} "
                      f"test {result['test_accuracy']:.3f} ({result['train_seconds']:.0f} s)", flush=True)
    print_table(runs)
    print(f"\nruns: {args.out}")


if __name__ == "__main__":
    main()
