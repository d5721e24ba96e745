"""Each file's faces computed once: cached by the file's SHA-256 beside the decoded-image cache.

``check``, ``compare``, ``train`` and the saved face model ask the same :class:`FaceCache`, so a
file's faces and descriptor are computed once per machine (``ROOT/faces-v<N>/<sha[:2]>/<sha>.json``
under the decoded-image cache's root; memory only without a root). Bulk work runs in worker
processes (dlib is not thread-safe, and the descriptor network holds the GIL), each loading the
models once.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from image_classifier.data.decode import decode_image, read_source
from image_classifier.errors import UnreadableImageError
from image_classifier.faces.detect import DETECT_MAX_SIDE, FaceAnalysis, analyse_image
from image_classifier.faces.models import weights_sha256
from image_classifier.fileio import atomic_write_json

log = logging.getLogger(__name__)

#: Bump when detection or the descriptor changes, so stale disk entries are never read.
FACES_VERSION = 2
#: JPEGs are decoded at the smallest draft scale whose shorter side is at least this: enough for
#: the 800 px detection copy of a 4:3 photo, and a 24 MP JPEG decodes at 1/4 of its pixels.
DECODE_SIDE = DETECT_MAX_SIDE * 3 // 4
#: Analyses kept in memory (1-3 KB each): a server's uploads must not grow it without bound.
MAX_MEMORY_ENTRIES = 10_000
#: Below this many files the pool's start-up (a second or two per worker) costs more than it saves.
MIN_FILES_FOR_POOL = 8


def analyse_bytes(data: bytes, path: str | None = None, max_pixels: int | None = None) -> FaceAnalysis:
    """Decode an image's bytes at detection size and analyse it (raises UnreadableImageError)."""
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    decoded = decode_image(data, path=path, target_size=DECODE_SIDE, **kwargs)
    analysis = analyse_image(decoded.image)
    # Boxes are in the pixels of the decoded copy; report them in the file's own pixels.
    k = decoded.width / decoded.image.width
    if k != 1.0:
        analysis = _rescaled(analysis, k, decoded.width, decoded.height)
    return analysis


def _rescaled(a: FaceAnalysis, k: float, width: int, height: int) -> FaceAnalysis:
    faces = [replace(f, box=tuple(v * k for v in f.box), landmarks=tuple((x * k, y * k) for x, y in f.landmarks))
             for f in a.faces]
    return FaceAnalysis(width, height, faces, a.descriptors)


def _analyse_path(path: str) -> tuple[str, dict | None, str | None]:
    """Worker: (path, analysis as JSON, or None and the reason it could not be read)."""
    try:
        data, _ = read_source(path)
        return path, analyse_bytes(data, path).to_json(), None
    except UnreadableImageError as err:
        return path, None, err.reason


class FaceCache:
    """Face analyses keyed by file SHA-256, in memory and (with ``root``) on disk."""

    def __init__(self, root: str | os.PathLike | None = None, *, workers: int | None = None) -> None:
        self.root = Path(root).expanduser() / f"faces-v{FACES_VERSION}" if root is not None else None
        self.workers = workers or min(2, os.cpu_count() or 1)
        self._mem: dict[str, FaceAnalysis] = {}
        self.stats = {"memory_hits": 0, "disk_hits": 0, "analysed": 0}

    def _disk_path(self, sha: str) -> Path | None:
        return None if self.root is None else self.root / sha[:2] / f"{sha}.json"

    def get(self, sha: str) -> FaceAnalysis | None:
        """The cached analysis of the file with this SHA-256, or None."""
        if sha in self._mem:
            self.stats["memory_hits"] += 1
            return self._mem[sha]
        disk = self._disk_path(sha)
        if disk is not None and disk.is_file():
            try:
                analysis = FaceAnalysis.from_json(json.loads(disk.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as err:  # a damaged entry is a miss
                log.debug("ignoring unreadable face cache entry %s: %s", disk, err)
                return None
            self.stats["disk_hits"] += 1
            self._remember(sha, analysis)
            return analysis
        return None

    def _remember(self, sha: str, analysis: FaceAnalysis) -> None:
        if len(self._mem) >= MAX_MEMORY_ENTRIES:
            self._mem.pop(next(iter(self._mem)))  # the oldest entry
        self._mem[sha] = analysis

    def put(self, sha: str, analysis: FaceAnalysis) -> None:
        self._remember(sha, analysis)
        disk = self._disk_path(sha)
        if disk is not None:
            try:
                atomic_write_json(disk, analysis.to_json())
            except OSError as err:  # a read-only or full cache directory only costs speed
                log.warning("cannot write face cache %s: %s", disk, err)

    def analyse_data(self, data: bytes, sha: str, path: str | None = None,
                     max_pixels: int | None = None) -> FaceAnalysis:
        """The analysis of one file's bytes (``sha`` is their SHA-256), from the cache when there."""
        cached = self.get(sha)
        if cached is not None:
            return cached
        analysis = analyse_bytes(data, path, max_pixels)
        self.stats["analysed"] += 1
        self.put(sha, analysis)
        return analysis

    def analyse_files(self, files: Sequence[tuple[str | os.PathLike, str]], *, progress: bool = False,
                      desc: str = "faces") -> tuple[dict[str, FaceAnalysis], dict[str, str]]:
        """Analyse many ``(path, sha256)`` files; returns ({sha: analysis}, {path: unreadable reason}).

        Cached files cost nothing; the others are analysed in worker processes with a progress bar.
        """
        results: dict[str, FaceAnalysis] = {}
        failures: dict[str, str] = {}
        todo: dict[str, str] = {}  # sha -> one path with that content
        for path, sha in files:
            cached = self.get(sha)
            if cached is not None:
                results[sha] = cached
            else:
                todo.setdefault(sha, os.fspath(path))
        if not todo:
            return results, failures
        weights_sha256()  # a missing or changed weights file fails here, once, with what to install
        by_path = {p: s for s, p in todo.items()}
        bar = tqdm(total=len(todo), unit="img", desc=desc, leave=False, disable=not progress, dynamic_ncols=True)

        def done(path: str, data: dict | None, reason: str | None) -> None:
            bar.update(1)
            if data is None:
                failures[path] = reason or "unreadable"
                return
            analysis = FaceAnalysis.from_json(data)
            self.stats["analysed"] += 1
            self.put(by_path[path], analysis)
            results[by_path[path]] = analysis

        try:
            if self.workers > 1 and len(todo) >= MIN_FILES_FOR_POOL:
                try:
                    # spawn, not fork: the parent may hold torch's OpenMP threads, which fork does not copy.
                    ctx = multiprocessing.get_context("spawn")
                    with ProcessPoolExecutor(self.workers, mp_context=ctx) as pool:
                        futures = [pool.submit(_analyse_path, p) for p in sorted(by_path)]
                        for fut in as_completed(futures):
                            done(*fut.result())
                except BrokenProcessPool as err:
                    # E.g. a script without an ``if __name__ == "__main__":`` guard, which spawned
                    # workers re-run: finish in this process rather than fail.
                    log.warning("face workers could not start (%s); continuing in this process", err)
            # Whatever the pool did not answer (no pool, or a broken one): in this process.
            for p in sorted(by_path):
                if by_path[p] not in results and p not in failures:
                    done(*_analyse_path(p))
        finally:
            bar.close()
        return results, failures
