"""Soak test of ``image-classifier serve`` on loopback: many clients, good photos and bad inputs, for a long time.

    .venv/bin/python bench/serve_soak.py [--model DIR] [--clients 50] [--duration 600] [--warmup 30]
                                         [--threads 8] [--torch-threads 1] [--max-batch N] [--out results.json]

What it does, in one run:
1. starts the real server (the ``serve`` command's code, waitress) in a subprocess on 127.0.0.1,
   with ``bench/serve_load.py``'s code (without ``--model`` it builds the same MobileNetV2 with a
   random 3-class head);
2. builds the inputs in memory: a few good photos (from ../shared/datasets/athletes when present,
   else synthetic JPEG/PNG made with Pillow) and a corpus of bad inputs, each with the status and
   error ``kind`` it must get: empty body, random bytes, truncated JPEG, PNG with a corrupted
   chunk, text, a body over the upload limit, a decompression bomb (a tiny PNG declaring a huge
   image), the wrong multipart field, a bad ``top_k``, an unknown ``model``;
3. sequential pass, one request per input: the reference answer of each good photo, and every bad
   input's status checked once;
4. the soak: N clients (keep-alive connections, stdlib http.client, no retries) for ``--duration``
   seconds, each picking inputs at random (half good photos, sent as the raw body or as multipart);
   every good answer must equal the reference (same label, probabilities within 1e-5), every bad
   input must get its status and kind, every non-2xx answer must be JSON with ``error`` and ``kind``;
   meanwhile the server's RSS (VmRSS of /proc/PID/status) is sampled every second;
5. prints a table per input, the RSS after warm-up / max / end / growth / slope, and a last line
   ``PASS`` or ``FAIL: reasons`` (exit status 0 or 1).

Pass means: no 5xx, no connection reset or other client exception, no wrong answer, no bad input
answered with the wrong status or kind, no client left hanging, and RSS growth after warm-up
<= ``--max-rss-growth-mb`` (50 MB). Client loops stop by themselves (time and count bounds).
Clients and server share this machine's cores.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import SHARED, default_model, percentile, start_server  # noqa: E402

LOOPBACK = ("127.0.0.1", "::1", "localhost")
PROB_TOLERANCE = 1e-5
REQUEST_TIMEOUT_S = 60.0


@dataclass
class Case:
    """One kind of request: what to send and what it must get."""

    name: str
    body: bytes
    content_type: str
    query: str = ""
    status: int = 200  # expected status
    kind: str | None = None  # expected error kind (non-2xx)
    weight: float = 1.0
    good: str | None = None  # name of the good photo whose reference answer applies


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    wrong: int = 0  # wrong answer (good) or wrong status/kind (bad)
    not_json: int = 0  # a non-2xx answer that is not JSON with `error` and `kind`
    exceptions: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def merge(self, other: "Tally") -> None:
        self.sent += other.sent
        self.statuses.update(other.statuses)
        self.wrong += other.wrong
        self.not_json += other.not_json
        self.exceptions.update(other.exceptions)
        self.latencies.extend(other.latencies)
        self.examples.extend(other.examples[: max(0, 3 - len(self.examples))])


# ---------------------------------------------------------------------------------------------
# inputs


def _encode(img, fmt: str, **kw) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def good_images(count: int = 3) -> dict[str, tuple[bytes, str]]:
    """A few real photos (median-size JPEG of each athlete folder, plus one as PNG), or synthetic ones."""
    from PIL import Image

    out: dict[str, tuple[bytes, str]] = {}
    root = SHARED / "datasets" / "athletes"
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir())[:count]:
            photos = sorted((p.stat().st_size, p.name, p) for p in folder.iterdir()
                            if p.suffix.lower() in (".jpg", ".jpeg"))
            if photos:
                path = photos[len(photos) // 2][2]
                out[folder.name[:24]] = (path.read_bytes(), "image/jpeg")
        if out:
            first_name, (first, _) = next(iter(out.items()))
            img = Image.open(io.BytesIO(first)).convert("RGB")
            out[f"{first_name} as png"] = (_encode(img, "PNG"), "image/png")
            return out
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(count):
        # smooth gradients plus noise: something like a photo, not pure noise
        y, x = np.mgrid[0:408, 0:612]
        base = np.stack([(x * (i + 1)) % 256, (y * (i + 2)) % 256, ((x + y) * (i + 3)) % 256], -1)
        arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        out[f"synthetic{i}.jpg"] = (_encode(Image.fromarray(arr), "JPEG", quality=90), "image/jpeg")
    arr = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    out["synthetic.png"] = (_encode(Image.fromarray(arr), "PNG"), "image/png")
    return out


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_build(chunks: list[tuple[bytes, bytes]], crc_ok: bool = True) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for ctype, payload in chunks:
        crc = zlib.crc32(ctype + payload) & 0xFFFFFFFF
        out.append(struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc if crc_ok else crc ^ 1))
    return b"".join(out)


def corrupted_png() -> bytes:
    """A valid PNG whose IDAT data is damaged (and its CRC recomputed, so only the data is wrong)."""
    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    chunks = _png_chunks(_encode(Image.fromarray(arr), "PNG"))
    fixed = []
    for ctype, payload in chunks:
        if ctype == b"IDAT":
            damaged = bytearray(payload)
            for i in range(10, len(damaged) - 10, 97):
                damaged[i] ^= 0xA5
            payload = bytes(damaged)
        fixed.append((ctype, payload))
    return _png_build(fixed)


def bomb_png(side: int = 40_000) -> bytes:
    """A few hundred bytes declaring a side x side image (1.6 gigapixels at 40000)."""
    from PIL import Image

    chunks = _png_chunks(_encode(Image.new("L", (1, 1)), "PNG"))
    out = []
    for ctype, payload in chunks:
        if ctype == b"IHDR":
            payload = struct.pack(">II", side, side) + payload[8:]
        out.append((ctype, payload))
    return _png_build(out)


def multipart(fields: dict[str, tuple[str | None, bytes]], boundary: str = "soakBoundary7MA4YWxk") -> tuple[bytes, str]:
    """A multipart/form-data body: name -> (filename or None, bytes)."""
    parts = []
    for name, (filename, value) in fields.items():
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
        if filename:
            head += "Content-Type: application/octet-stream\r\n"
        parts.append(head.encode() + b"\r\n" + value + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def build_cases(goods: dict[str, tuple[bytes, str]], max_upload_bytes: int) -> list[Case]:
    """Good photos (raw body and multipart; half the weight in all) and the bad-input corpus (the other half)."""
    cases: list[Case] = []
    for name, (data, ctype) in goods.items():
        cases.append(Case(f"good raw {name}", data, ctype, good=name))
        body, mp = multipart({"file": ("photo", data)})
        cases.append(Case(f"good multipart {name}", body, mp, good=name))
    photo = next(data for data, ctype in goods.values() if ctype == "image/jpeg")
    rng = random.Random(0)
    wrong_field, mp = multipart({"image": ("photo.jpg", photo)})
    bad = [
        Case("empty body", b"", "image/jpeg", status=400, kind="empty"),
        Case("random bytes", bytes(rng.getrandbits(8) for _ in range(20_000)), "application/octet-stream",
             status=415, kind="unsupported"),
        Case("truncated jpeg", photo[: len(photo) // 2], "image/jpeg", status=400, kind="corrupt"),
        Case("png corrupted chunk", corrupted_png(), "image/png", status=400, kind="corrupt"),
        Case("text file", ("This is not an image.\n" * 200).encode(), "text/plain", status=415, kind="unsupported"),
        # Each is 11 MB sent through loopback and discarded: a quarter of the weight of the others.
        Case(f"oversized {(max_upload_bytes + 1024 * 1024) / 1024 / 1024:g} MB",
             b"\xff\xd8\xff" + bytes(max_upload_bytes + 1024 * 1024 - 3), "image/jpeg",
             status=413, kind="too_large", weight=0.25),
        Case("decompression bomb png", bomb_png(), "image/png", status=413, kind="too_large"),
        Case("wrong multipart field", wrong_field, mp, status=400, kind="no_file"),
        Case("bad top_k", photo, "image/jpeg", query="top_k=abc", status=422, kind="bad_parameter"),
        Case("top_k=0", photo, "image/jpeg", query="top_k=0", status=422, kind="bad_parameter"),
        Case("unknown model", photo, "image/jpeg", query="model=no-such-model", status=422, kind="unknown_model"),
    ]
    good_weight = sum(c.weight for c in cases)
    bad_weight = sum(c.weight for c in bad)
    for c in bad:
        c.weight *= good_weight / bad_weight  # good and bad: half of the requests each
    return cases + bad


# ---------------------------------------------------------------------------------------------
# requests


def send(conn: http.client.HTTPConnection, case: Case) -> tuple[int, bytes]:
    path = "/api/predict" + (f"?{case.query}" if case.query else "")
    conn.request("POST", path, body=case.body, headers={"Content-Type": case.content_type})
    resp = conn.getresponse()
    return resp.status, resp.read()


def check(case: Case, status: int, raw: bytes, references: dict[str, dict]) -> tuple[bool, bool, str]:
    """(answer right, error answer well-formed, a description when something is wrong)."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    well_formed = True
    if status >= 300:
        well_formed = (isinstance(body, dict) and isinstance(body.get("error"), str)
                       and isinstance(body.get("kind"), str))
    if case.good is not None:
        ref = references[case.good]
        if status != 200 or not isinstance(body, dict):
            return False, well_formed, f"{case.name}: {status} {raw[:200]!r}"
        probs = body.get("probabilities")
        if body.get("label") != ref["label"] or not isinstance(probs, dict) or probs.keys() != ref["probabilities"].keys():
            return False, well_formed, f"{case.name}: label {body.get('label')!r} != {ref['label']!r}"
        worst = max(abs(probs[k] - v) for k, v in ref["probabilities"].items())
        if worst > PROB_TOLERANCE:
            return False, well_formed, f"{case.name}: probabilities differ by {worst:.2e}"
        return True, well_formed, ""
    kind = body.get("kind") if isinstance(body, dict) else None
    if status != case.status or kind != case.kind:
        return False, well_formed, f"{case.name}: got {status} {kind!r}, expected {case.status} {case.kind!r}: {raw[:200]!r}"
    return True, well_formed, "" if well_formed else f"{case.name}: error answer not JSON with error/kind: {raw[:200]!r}"


def sequential(host: str, port: int, cases: list[Case]) -> tuple[dict[str, dict], list[str]]:
    """One request per input on one connection: the good photos' reference answers and a first check of the bad ones."""
    conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
    references: dict[str, dict] = {}
    problems: list[str] = []
    try:
        for case in cases:
            status, raw = send(conn, case)
            if case.good is not None and case.good not in references:
                if status != 200:
                    problems.append(f"reference {case.name}: {status} {raw[:200]!r}")
                    continue
                references[case.good] = json.loads(raw)
                continue
            if case.good is not None and case.good not in references:
                continue  # its reference failed (reported above)
            ok, well_formed, why = check(case, status, raw, references)
            if not ok or not well_formed:
                problems.append("sequential " + why)
    finally:
        conn.close()
    return references, problems


def soak(host: str, port: int, cases: list[Case], references: dict[str, dict], clients: int,
         duration: float, max_per_client: int, seed: int = 0) -> tuple[dict[str, Tally], float, int]:
    """N clients for ``duration`` seconds (or ``max_per_client`` requests each): tallies per case, wall seconds, hung clients."""
    tallies = {c.name: Tally() for c in cases}
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]
    weights = [c.weight for c in cases]

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        local = {c.name: Tally() for c in cases}
        conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
        barrier.wait()
        n = 0
        while n < max_per_client and time.perf_counter() < stop_at[0]:
            n += 1
            case = rng.choices(cases, weights)[0]
            tally = local[case.name]
            tally.sent += 1
            t0 = time.perf_counter()
            try:
                status, raw = send(conn, case)
            except (OSError, http.client.HTTPException) as err:
                # No retry: a reset or any other failure is counted, then a fresh connection.
                tally.exceptions[type(err).__name__] += 1
                if len(tally.examples) < 3:
                    tally.examples.append(f"{case.name}: {type(err).__name__}: {err}")
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
                continue
            elapsed = (time.perf_counter() - t0) * 1000
            tally.statuses[status] += 1
            ok, well_formed, why = check(case, status, raw, references)
            tally.wrong += not ok
            tally.not_json += not well_formed
            if ok and case.good is not None:
                tally.latencies.append(elapsed)
            if why and len(tally.examples) < 3:
                tally.examples.append(why)
        conn.close()
        with lock:
            for name, t in local.items():
                tallies[name].merge(t)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + duration
    t_start = time.perf_counter()
    barrier.wait()
    deadline = time.monotonic() + duration + REQUEST_TIMEOUT_S + 30
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    return tallies, time.perf_counter() - t_start, hung


# ---------------------------------------------------------------------------------------------
# memory


class RssSampler:
    """VmRSS of a process, every ``interval`` seconds, in a daemon thread: (seconds since start, MB)."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024  # kB -> MB
        except OSError:
            return None
        return None

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            rss = self._read()
            if rss is not None:
                self.samples.append((time.monotonic() - t0, rss))
            self._stop.wait(self.interval)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        rss = self._read()  # one last sample at the very end
        if rss is not None and self.samples:
            self.samples.append((self.samples[-1][0] + self.interval, rss))


def rss_summary(samples: list[tuple[float, float]], warmup: float) -> dict:
    if not samples:
        return {"samples": 0}
    after = [(t, r) for t, r in samples if t >= warmup] or samples[-1:]
    slope = 0.0
    if len(after) >= 2:
        ts, rs = [t for t, _ in after], [r for _, r in after]
        mt, mr = sum(ts) / len(ts), sum(rs) / len(rs)
        var = sum((t - mt) ** 2 for t in ts)
        slope = 60 * sum((t - mt) * (r - mr) for t, r in after) / var if var else 0.0
    return {
        "samples": len(samples),
        "start_mb": samples[0][1],
        "after_warmup_mb": after[0][1],
        "max_mb": max(r for _, r in samples),
        "end_mb": samples[-1][1],
        "growth_mb": samples[-1][1] - after[0][1],
        "slope_mb_per_min": slope,
        "series": [(round(t, 1), round(r, 1)) for t, r in samples],
    }


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="saved model or run directory (default: MobileNetV2, random head)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of the soak")
    ap.add_argument("--warmup", type=float, default=30.0, help="first seconds of the soak left out of the RSS baseline")
    ap.add_argument("--threads", type=int, default=8, help="waitress request threads (the serve default)")
    ap.add_argument("--torch-threads", type=int, default=1, help="the server's --torch-threads (default: 1)")
    ap.add_argument("--max-batch", type=int, default=None, help="the server's --max-batch (default: its own)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--max-upload-mb", type=float, default=10.0,
                    help="the server's upload limit (the oversized input is 1 MB over it)")
    ap.add_argument("--max-requests", type=int, default=1_000_000, help="bound on the requests of each client")
    ap.add_argument("--max-rss-growth-mb", type=float, default=50.0, help="RSS growth after warm-up that fails the run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the results (JSON) here")
    args = ap.parse_args()

    max_upload = int(args.max_upload_mb * 1024 * 1024)
    goods = good_images()
    cases = build_cases(goods, max_upload)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_model(Path(tmp) / "mobilenet_v2")
        proc, host, port = start_server(model, args, extra=["--max-upload-mb", f"{args.max_upload_mb:g}"])
        if host not in LOOPBACK:
            proc.kill()
            raise SystemExit(f"refusing a non-loopback address: {host}")
        sampler = None
        try:
            references, problems = sequential(host, port, cases)
            if len(references) != len(goods):
                raise SystemExit("no reference answer for every good photo:\n" + "\n".join(problems))
            sampler = RssSampler(proc.pid).start()
            tallies, wall, hung = soak(host, port, cases, references, args.clients, args.duration,
                                       args.max_requests, args.seed)
        finally:
            if sampler:
                sampler.stop()
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    total = Tally()
    for t in tallies.values():
        total.merge(t)
    five_xx = sum(n for s, n in total.statuses.items() if s >= 500)
    good = [c for c in cases if c.good is not None]
    bad = [c for c in cases if c.good is None]
    wrong_answers = sum(tallies[c.name].wrong for c in good)
    wrong_status = sum(tallies[c.name].wrong for c in bad)
    exceptions = sum(total.exceptions.values())
    resets = sum(n for name, n in total.exceptions.items() if "Reset" in name or "BrokenPipe" in name
                 or name == "RemoteDisconnected")
    good_lat = [x for c in good for x in tallies[c.name].latencies]
    rss = rss_summary(sampler.samples if sampler else [], args.warmup)

    # --- report
    print(f"model: {model}  server threads: {args.threads}  torch threads: {args.torch_threads}  "
          f"clients: {args.clients}  duration: {args.duration:g} s (ran {wall:.1f} s)  warm-up: {args.warmup:g} s")
    width = max(len(c.name) for c in cases)
    rows = [(c.name, str(c.status), tallies[c.name]) for c in cases] + [("total", "", total)]
    cells = {name: " ".join(f"{s}:{n}" for s, n in sorted(t.statuses.items())) for name, _, t in rows}
    swidth = max(len("statuses"), *map(len, cells.values()))
    print(f"{'input':<{width}}  {'expect':>6}  {'sent':>7}  {'statuses':<{swidth}}  {'wrong':>5}  {'notjson':>7}  {'exc':>4}")
    for name, expect, t in rows:
        print(f"{name:<{width}}  {expect:>6}  {t.sent:>7}  {cells[name]:<{swidth}}  {t.wrong:>5}  {t.not_json:>7}  "
              f"{sum(t.exceptions.values()):>4}")
    print(f"requests: {total.sent} in {wall:.1f} s = {total.sent / wall:.1f} req/s; good answers: {len(good_lat)}, "
          f"latency p50 {percentile(good_lat, 50):.1f} / p95 {percentile(good_lat, 95):.1f} / "
          f"p99 {percentile(good_lat, 99):.1f} ms")
    print(f"5xx: {five_xx}   resets: {resets}   client exceptions: {exceptions} {dict(total.exceptions) or ''}   "
          f"wrong answers: {wrong_answers}   bad inputs with the wrong status/kind: {wrong_status}   "
          f"error answers not JSON: {total.not_json}   hung clients: {hung}")
    if rss.get("samples"):
        print(f"server RSS (MB): start {rss['start_mb']:.1f}, after warm-up {rss['after_warmup_mb']:.1f}, "
              f"max {rss['max_mb']:.1f}, end {rss['end_mb']:.1f}; growth {rss['growth_mb']:+.1f} "
              f"(target <= {args.max_rss_growth_mb:g}), slope {rss['slope_mb_per_min']:+.2f} MB/min "
              f"({rss['samples']} samples)")
    for problem in problems:
        print(f"  problem: {problem}")
    for c in cases:
        for example in tallies[c.name].examples:
            print(f"  example: {example}")

    reasons = []
    if problems:
        reasons.append(f"{len(problems)} problems in the sequential pass")
    if five_xx:
        reasons.append(f"{five_xx} 5xx")
    if resets:
        reasons.append(f"{resets} connection resets")
    if exceptions - resets:
        reasons.append(f"{exceptions - resets} other client exceptions")
    if wrong_answers:
        reasons.append(f"{wrong_answers} wrong answers")
    if wrong_status:
        reasons.append(f"{wrong_status} bad inputs with the wrong status/kind")
    if total.not_json:
        reasons.append(f"{total.not_json} error answers not JSON with error/kind")
    if hung:
        reasons.append(f"{hung} clients still running after the deadline")
    if not rss.get("samples"):
        reasons.append("no RSS sample")
    elif rss["growth_mb"] > args.max_rss_growth_mb:
        reasons.append(f"RSS grew {rss['growth_mb']:.1f} MB after warm-up (> {args.max_rss_growth_mb:g})")
    if total.sent == 0:
        reasons.append("no request sent")

    if args.out:
        result = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "model": str(model),
            "seconds": wall,
            "requests": total.sent,
            "rps": total.sent / wall if wall else 0.0,
            "statuses": {str(s): n for s, n in sorted(total.statuses.items())},
            "five_xx": five_xx,
            "resets": resets,
            "client_exceptions": dict(total.exceptions),
            "wrong_answers": wrong_answers,
            "bad_inputs_wrong_status": wrong_status,
            "errors_not_json": total.not_json,
            "hung_clients": hung,
            "good_latency_ms": {"p50": percentile(good_lat, 50), "p95": percentile(good_lat, 95),
                                "p99": percentile(good_lat, 99)},
            "inputs": {c.name: {"bytes": len(c.body), "expected_status": c.status, "expected_kind": c.kind,
                                "sent": tallies[c.name].sent,
                                "statuses": {str(s): n for s, n in sorted(tallies[c.name].statuses.items())},
                                "wrong": tallies[c.name].wrong, "not_json": tallies[c.name].not_json,
                                "exceptions": dict(tallies[c.name].exceptions),
                                "examples": tallies[c.name].examples} for c in cases},
            "references": {name: {"label": r["label"], "probabilities": r["probabilities"]}
                           for name, r in references.items()},
            "sequential_problems": problems,
            "rss": rss,
            "pass": not reasons,
            "reasons": reasons,
        }
        args.out.write_text(json.dumps(result, indent=2))
    print("PASS" if not reasons else "FAIL: " + "; ".join(reasons))
    sys.exit(0 if not reasons else 1)


if __name__ == "__main__":
    main()
