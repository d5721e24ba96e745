"""Load test of ``image-classifier serve`` on loopback: many clients, then the server's overhead.

    .venv/bin/python bench/serve_load.py [--model DIR] [--clients 50] [--duration 20]
                                         [--threads 8] [--torch-threads 1] [--max-batch 8] [--image PHOTO]

What it does, in one run:
1. starts the real server (the ``serve`` command's code, waitress) in a subprocess on 127.0.0.1;
2. measures the model's own latency in this process: decode the photo's bytes + preprocess +
   forward at batch 1, the same work the server does per request, median of repeats (with the
   same number of torch threads as the server);
3. one client, sequential requests: end-to-end p50 over HTTP, and its ratio to (2): the server's
   per-request overhead (target: <= 1.5x);
4. N concurrent clients (keep-alive connections, stdlib http.client) for a bounded time:
   requests/s, p50/p95/p99 latency, errors (any status but 200, or a wrong answer);
5. the model's latency again, so a noisy machine shows up as a difference between (2) and (5).

Without ``--model`` it builds a MobileNetV2 from ../shared/weights with a random 3-class head
(latency does not depend on accuracy). Clients and server share this machine's cores: the
numbers are for this machine, and include the clients' own CPU use.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

SERVER_SNIPPET = """
import argparse, sys
from image_classifier.cli import serve
parser = argparse.ArgumentParser()
serve.add_parser(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def default_model(out: Path) -> Path:
    """MobileNetV2 (ImageNet backbone from ../shared/weights, random head) saved as a served model."""
    import torch

    from image_classifier.models.registry import build_model, get_arch
    from image_classifier.saved_model import save_model

    weights = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
    torch.manual_seed(0)
    if weights.is_file():
        net, opts = build_model("mobilenet_v2", 3, pretrained=True, weights=weights)
    else:
        print(f"note: {weights} not found, using random backbone weights (same latency)")
        net, opts = build_model("mobilenet_v2", 3)
    card = {"architecture": "mobilenet_v2", "arch_options": opts, "classes": ["a", "b", "c"],
            "preprocessing": get_arch("mobilenet_v2").preprocessing.to_dict()}
    return save_model(net, card, out)


def default_image() -> bytes:
    folder = SHARED / "datasets" / "athletes" / "Maria Sharapova"
    if folder.is_dir():
        # A typical photo of the data set (the median file size: a ~612x408 web JPEG).
        photos = sorted((p.stat().st_size, p.name, p) for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if photos:
            return photos[len(photos) // 2][2].read_bytes()
    import io

    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 256, (408, 612, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def model_latency_ms(clf, image: bytes, repeats: int, warmup: int = 3) -> list[float]:
    """The server's per-request work without the server: decode the bytes, preprocess, forward (bs 1)."""
    from image_classifier.data.decode import load_image

    size = int(clf.preprocessing.input_size)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        clf.predict_proba([load_image(image, target_size=size)])
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return times


class Client:
    """One keep-alive HTTP connection posting the image as the raw body."""

    def __init__(self, host: str, port: int, image: bytes) -> None:
        self.host, self.port, self.image = host, port, image
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def predict(self) -> tuple[int, dict | None]:
        for attempt in range(2):
            try:
                self.conn.request("POST", "/api/predict", body=self.image, headers={"Content-Type": "image/jpeg"})
                resp = self.conn.getresponse()
                raw = resp.read()
                try:
                    return resp.status, json.loads(raw)
                except ValueError:
                    return resp.status, None
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt:
                    return 0, None
        return 0, None

    def close(self) -> None:
        self.conn.close()


def run_clients(host: str, port: int, image: bytes, clients: int, duration: float,
                expected_label: str, max_requests: int | None = None) -> dict:
    latencies: list[float] = []
    server_ms: list[float] = []
    errors: list[str] = []
    parts: list[tuple[float, float, float, int]] = []
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker() -> None:
        client = Client(host, port, image)
        local_lat, local_srv, local_err, local_parts = [], [], [], []
        start_barrier.wait()
        while time.perf_counter() < stop_at[0] and (max_requests is None or len(local_lat) + len(local_err) < max_requests):
            t0 = time.perf_counter()
            status, body = client.predict()
            elapsed = (time.perf_counter() - t0) * 1000
            if status == 200 and body and body.get("label") == expected_label:
                local_lat.append(elapsed)
                local_srv.append(body["latency_ms"])
                local_parts.append((body["timing"]["decode_ms"], body["timing"]["queue_ms"],
                                    body["timing"]["inference_ms"], body["timing"]["batch_size"]))
            else:
                local_err.append(f"{status}: {body}")
        client.close()
        with lock:
            latencies.extend(local_lat)
            server_ms.extend(local_srv)
            errors.extend(local_err)
            parts.extend(local_parts)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + duration
    t_start = time.perf_counter()
    start_barrier.wait()
    for t in threads:
        t.join(timeout=duration + 120)
    wall = time.perf_counter() - t_start
    return {
        "clients": clients,
        "seconds": wall,
        "requests": len(latencies) + len(errors),
        "ok": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "rps": len(latencies) / wall if wall else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "latencies": latencies,
        "server_latencies": server_ms,
        "server_p50_ms": percentile(server_ms, 50),
        "server_parts": parts,
    }


def start_server(model: Path, args: argparse.Namespace,
                 extra: list[str] | None = None) -> tuple[subprocess.Popen, str, int]:
    """The ``serve`` command in a subprocess on 127.0.0.1 (any free port); ``extra``: more ``serve`` options."""
    cmd = [sys.executable, "-c", SERVER_SNIPPET, "serve", str(model), "--port", "0",
           "--threads", str(args.threads), "--backend", args.backend]
    cmd += ["--torch-threads", str(args.torch_threads)]
    if args.max_batch:
        cmd += ["--max-batch", str(args.max_batch)]
    cmd += extra or []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = None
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        match = re.search(r"http://(127\.0\.0\.1):(\d+)/", line)
        if match:
            url = match
        if "ready:" in line and url:
            # keep draining the server's output so it never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, url.group(1), int(url.group(2))
    proc.kill()
    raise SystemExit("the server did not start:\n" + "".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="saved model or run directory (default: MobileNetV2, random head)")
    ap.add_argument("--image", type=Path, help="photo to send (default: one athlete photo from ../shared)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of the concurrent phase")
    ap.add_argument("--threads", type=int, default=8, help="waitress request threads (the serve default)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch threads per forward pass, in the server and in the in-process timing (default: 1, the server's default)")
    ap.add_argument("--max-batch", type=int, default=None, help="the server's --max-batch (default: its own)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--repeats", type=int, default=100,
                    help="in-process model calls, and as many one-client requests, in --rounds alternating blocks")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from image_classifier import runtime

    # Same thread setting as the server, so the in-process model timing is comparable.
    runtime.configure(num_threads=args.torch_threads)
    import torch

    image = args.image.read_bytes() if args.image else default_image()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_model(Path(tmp) / "mobilenet_v2")
        model_dir = model
        if not (Path(model) / "model.json").is_file():
            from image_classifier.runs import resolve_model_dir

            model_dir = resolve_model_dir(model)
        proc, host, port = start_server(model, args)
        try:
            probe = Client(host, port, image)
            status, body = probe.predict()
            probe.close()
            if status != 200:
                raise SystemExit(f"the server answered {status}: {body}")
            expected = body["label"]
            from image_classifier import load_model

            clf = load_model(Path(model_dir), backend=args.backend)
            # Alternate short blocks of "model alone, in this process" and "one client over HTTP"
            # while the server is otherwise idle, so both see the same machine state (the CPU is
            # shared and its speed drifts); the ratio of the pooled medians is the overhead.
            model_samples: list[float] = []
            single_samples: list[float] = []
            single_server: list[float] = []
            single_parts: list = []
            round_ratios: list[float] = []
            per_round = max(5, args.repeats // args.rounds)
            for _ in range(args.rounds):
                m = model_latency_ms(clf, image, per_round)
                s1 = run_clients(host, port, image, 1, 60.0, expected, max_requests=per_round)
                model_samples += m
                single_samples += s1["latencies"]
                single_server += s1["server_latencies"]
                single_parts += s1["server_parts"]
                round_ratios.append(s1["p50_ms"] / statistics.median(m))
                if s1["errors"]:
                    raise SystemExit(f"single-client errors: {s1['error_examples']}")
            before = model_samples
            many = run_clients(host, port, image, args.clients, args.duration, expected)
            after = model_latency_ms(clf, image, per_round)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    single = {"clients": 1, "ok": len(single_samples), "errors": 0, "error_examples": [],
              "seconds": sum(single_samples) / 1000, "rps": 1000 * len(single_samples) / sum(single_samples),
              "p50_ms": percentile(single_samples, 50), "p95_ms": percentile(single_samples, 95),
              "p99_ms": percentile(single_samples, 99), "server_p50_ms": percentile(single_server, 50),
              "server_parts": single_parts}
    for r in (single, many):
        if r["server_parts"]:
            cols = list(zip(*r.pop("server_parts")))
            r["server_breakdown_p50_ms"] = {k: percentile(list(c), 50) for k, c in zip(("decode", "queue", "forward"), cols)}
            r["mean_batch"] = statistics.mean(cols[3])
        r.pop("latencies", None)
        r.pop("server_latencies", None)
    model_ms = statistics.median(before)
    result = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "server": {"threads": args.threads, "torch_threads": args.torch_threads, "max_batch": args.max_batch or "default",
                   "backend": args.backend},
        "image_bytes": len(image),
        "model_ms_p50": model_ms,
        "model_ms_p50_after_load": statistics.median(after),
        "rounds": args.rounds,
        "round_ratios": round_ratios,
        "single": single,
        "concurrent": many,
        "single_p50_over_model": single["p50_ms"] / model_ms,
        "server_overhead_ms": single["p50_ms"] - model_ms,
    }
    print(f"model: {model}  backend: {args.backend}  image: {len(image) / 1024:.0f} KB  "
          f"server threads: {args.threads}  torch threads: {torch.get_num_threads()} (cores: {os.cpu_count()})")
    print(f"model alone (decode + preprocess + forward, bs 1, in-process): p50 {model_ms:.1f} ms over "
          f"{len(before)} calls in {args.rounds} blocks (after the load test: {result['model_ms_p50_after_load']:.1f} ms)")
    for name, r in (("1 client", single), (f"{many['clients']} clients", many)):
        print(f"{name:>11}: {r['ok']} ok / {r['errors']} errors in {r['seconds']:.1f} s = {r['rps']:.1f} req/s; "
              f"latency p50 {r['p50_ms']:.1f} / p95 {r['p95_ms']:.1f} / p99 {r['p99_ms']:.1f} ms"
              + (f"; server-side p50 {r['server_p50_ms']:.1f} ms" if r["server_p50_ms"] == r["server_p50_ms"] else ""))
        if "server_breakdown_p50_ms" in r:
            b = r["server_breakdown_p50_ms"]
            print(f"{'':>13}in the server (p50): decode+preprocess {b['decode']:.1f} ms, queue {b['queue']:.1f} ms, "
                  f"forward {b['forward']:.1f} ms (mean batch {r['mean_batch']:.1f})")
        for example in r["error_examples"]:
            print(f"             error: {example}")
    print(f"single-client p50 / model p50 = {result['single_p50_over_model']:.2f}x "
          f"(per block: {', '.join(f'{r:.2f}' for r in round_ratios)}) "
          f"(server + HTTP overhead {result['server_overhead_ms']:.1f} ms per request; target <= 1.5x)")
    print(f"errors under load: {many['errors']} (target 0)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
