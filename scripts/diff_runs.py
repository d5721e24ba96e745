"""Two ``compare`` runs of the same data and seed, side by side: are their outputs the same?

    .venv/bin/python scripts/diff_runs.py RUN_BEFORE RUN_AFTER

What a refactoring must leave unchanged (issue 26): ``comparison.csv`` to the last digit (the
columns that are measured times, sizes that include those times' digits, and the backend chosen
by measured speed left out, and named), ``predictions.csv``, and every other file byte for byte;
for the JSON files that differ, the keys whose values differ (timings, dates, load averages).
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: comparison.csv columns that are measured (times, memory, the backend chosen by speed) or that
#: count model.json's bytes, whose timing fields change length from run to run.
MEASURED = {"latency_ms_p50", "latency_ms_p95", "throughput_ips", "train_seconds", "e2e_latency_ms_p50",
            "e2e_latency_ms_p95", "peak_rss_mb", "onnx_latency_ms_p50", "onnx_e2e_latency_ms_p50",
            "onnx_throughput_ips", "onnx_speedup", "serve_backend", "size_mb"}


def _changed(x: Any, y: Any, path: str = "") -> Iterator[str]:
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            yield from _changed(x.get(k, "<absent>"), y.get(k, "<absent>"), f"{path}.{k}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for u, v in zip(x, y):
            yield from _changed(u, v, f"{path}[]")
    elif x != y:
        yield path


def main(before: Path, after: Path) -> int:
    rows_a = list(csv.DictReader(open(before / "comparison.csv", newline="")))
    rows_b = list(csv.DictReader(open(after / "comparison.csv", newline="")))
    columns = [c for c in rows_a[0] if c not in MEASURED]
    cells = [(x["model"], c, x[c], y[c]) for x, y in zip(rows_a, rows_b) for c in columns if x[c] != y[c]]
    print(f"comparison.csv: {len(rows_a)} and {len(rows_b)} rows; {len(columns)} columns compared, "
          f"{len(cells)} cells differ {cells[:10]}; left out (measured): {', '.join(sorted(MEASURED))}")
    files_a = {p.relative_to(before).as_posix() for p in before.rglob("*") if p.is_file()}
    files_b = {p.relative_to(after).as_posix() for p in after.rglob("*") if p.is_file()}
    print("only before:", sorted(files_a - files_b), "only after:", sorted(files_b - files_a))
    same, differ = [], []
    for name in sorted(files_a & files_b):
        digest = [hashlib.sha256((root / name).read_bytes()).hexdigest() for root in (before, after)]
        (same if digest[0] == digest[1] else differ).append(name)
    print(f"{len(same)} files byte for byte the same, e.g. "
          f"{[n for n in same if n.endswith(('.safetensors', '.onnx', 'predictions.csv', 'split.csv'))]}")
    for name in differ:
        keys = ""
        if name.endswith(".json"):
            a, b = (json.loads((root / name).read_text()) for root in (before, after))
            keys = ": " + ", ".join(sorted({re.sub(r"\[\]", "", p) for p in _changed(a, b)}))
        print(f"differs: {name}{keys}")
    return 1 if cells or files_a != files_b else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
