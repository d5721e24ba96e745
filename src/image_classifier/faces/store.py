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
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from image_classifier.data.decode import decode_image, read_source
from image_classifier.errors import UnreadableImageError
from image_classifier.faces.detect import DETECT_MAX_SIDE, FaceAnalysis, analyse_image, describe_rest
from image_classifier.faces.dlib_weights import weights_sha256
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


def _decode_for_faces(data: bytes, path: str | None, max_pixels: int | None) -> Any:
    """The image decoded at detection size (raises UnreadableImageError)."""
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    return decode_image(data, path=path, target_size=DECODE_SIDE, **kwargs)


def _analyse_decoded(decoded: Any) -> FaceAnalysis:
    analysis = analyse_image(decoded.image)
    # Boxes are in the pixels of the decoded copy; report them in the file's own pixels.
    k = decoded.width / decoded.image.width
    if k != 1.0:
        analysis = _rescaled(analysis, k, decoded.width, decoded.height)
    return analysis


def _describe_rest(analysis: FaceAnalysis, decoded: Any) -> FaceAnalysis:
    """``analysis`` (of ``decoded``) with the faces past the described ones described too."""
    # file pixels per decoded pixel (see _analyse_decoded)
    return describe_rest(analysis, decoded.image, decoded.width / decoded.image.width)


def analyse_bytes(data: bytes, path: str | None = None, max_pixels: int | None = None) -> FaceAnalysis:
    """Decode an image's bytes at detection size and analyse it (raises UnreadableImageError)."""
    return _analyse_decoded(_decode_for_faces(data, path, max_pixels))


def describe_every_face(analysis: FaceAnalysis, data: bytes, path: str | None = None,
                        max_pixels: int | None = None) -> FaceAnalysis:
    """``analysis`` with a descriptor for every face, not only the largest
    :data:`~image_classifier.faces.detect.MAX_DESCRIBED` (a group photo): the image is decoded
    again as :func:`analyse_bytes` decoded it, and the other faces described from their landmarks.
    The analysis itself is returned when every face has a descriptor already."""
    if analysis.every_face_described:
        return analysis  # nothing to decode for
    return _describe_rest(analysis, _decode_for_faces(data, path, max_pixels))


def _rescaled(a: FaceAnalysis, k: float, width: int, height: int) -> FaceAnalysis:
    faces = [replace(f, box=tuple(v * k for v in f.box), landmarks=tuple((x * k, y * k) for x, y in f.landmarks))
             for f in a.faces]
    return FaceAnalysis(width, height, faces, a.descriptors)


def _analyse_path(path: str, every_face: bool = False
                  ) -> tuple[str, dict | None, dict | None, tuple[str, str] | None]:
    """Worker: (path, analysis as JSON, with ``every_face`` the analysis with every face described
    when that is more (else None), and None), or (path, None, None, (the reason it could not be
    read, its kind))."""
    try:
        data, _ = read_source(path)
        decoded = _decode_for_faces(data, path, None)
        analysis = _analyse_decoded(decoded)
        every = _describe_rest(analysis, decoded) if every_face else analysis  # from the same decode
        return path, analysis.to_json(), None if every is analysis else every.to_json(), None
    except UnreadableImageError as err:
        return path, None, None, (err.reason, err.kind)


def _every_key(sha: str) -> str:
    """The cache key of a file's analysis with every face described (see :meth:`FaceCache.every_face`)."""
    return f"{sha}-every"


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

    def every_face(self, analysis: FaceAnalysis, data: bytes, sha: str, path: str | None = None,
                   max_pixels: int | None = None) -> FaceAnalysis:
        """:func:`describe_every_face`, cached by content beside the file's analysis (a separate entry:
        what training and ``check`` read stays the analysis of the largest faces)."""
        if analysis.every_face_described:
            return analysis
        key = _every_key(sha)
        cached = self.get(key)
        if cached is not None:
            return cached
        full = describe_every_face(analysis, data, path, max_pixels)
        self.put(key, full)
        return full

    def analyse_files(self, files: Sequence[tuple[str | os.PathLike, str]], *, progress: bool = False,
                      desc: str = "faces") -> tuple[dict[str, FaceAnalysis], dict[str, str]]:
        """Analyse many ``(path, sha256)`` files; returns ({sha: analysis}, {path: unreadable reason}).

        Cached files cost nothing; the others are analysed in worker processes with a progress bar.
        """
        results: dict[str, FaceAnalysis] = {}
        failures: dict[str, str] = {}
        with FaceStream(self, files) as stream:
            bar = tqdm(total=stream.todo, unit="img", desc=desc, leave=False, disable=not progress or not stream.todo,
                       dynamic_ncols=True)
            try:
                for path, sha, analysis, error in stream:
                    if stream.analysing:
                        bar.update(1)
                    if analysis is None:
                        failures[path] = error.reason if error is not None else "unreadable"
                    else:
                        results[sha] = analysis
            finally:
                bar.close()
        return results, failures


class FaceStream:
    """Many files' analyses, handed back one by one as each is ready: the cached ones first, then
    the others as the worker processes finish them (all submitted when the stream is made, so they
    run while the caller does something else, e.g. loads a model). Yields ``(path, sha256, analysis,
    None)``, or ``(path, sha256, None, error)`` for a file that cannot be read (an
    :class:`~image_classifier.errors.UnreadableImageError` with its reason and kind); each file's content
    is analysed once, and files sharing a content share its answer. Use it as a context manager:
    leaving it (Ctrl-C included) stops the workers; what they finished is in the cache.

    ``workers``: processes analysing at once (default: the cache's). ``every_face``: the workers
    also describe the faces beyond the largest ones (cached as :meth:`FaceCache.every_face` caches
    them), for a caller that answers every face (``sort``): done there, beside the detection, rather
    than one by one in the caller's process. ``analysing`` is False while cached answers are handed
    back, True once the workers' answers are.
    """

    def __init__(self, cache: FaceCache, files: Sequence[tuple[str | os.PathLike, str]], *,
                 workers: int | None = None, every_face: bool = False) -> None:
        self.cache = cache
        self.workers = workers or cache.workers
        self.every_face = every_face
        self.analysing = False
        self._cached: list[tuple[str, str, FaceAnalysis]] = []
        self._paths: dict[str, list[tuple[str, str]]] = {}  # one path per content -> every (path, sha) with it
        first: dict[str, str] = {}
        for path, sha in files:
            path = os.fspath(path)
            hit = cache.get(sha)
            if hit is not None:
                self._cached.append((path, sha, hit))
            else:
                self._paths.setdefault(first.setdefault(sha, path), []).append((path, sha))
        self.todo = sum(len(v) for v in self._paths.values())
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[Any] = []
        if self._paths:
            weights_sha256()  # a missing or changed weights file fails here, once, with what to install
        if self.workers > 1 and len(self._paths) >= MIN_FILES_FOR_POOL:
            try:
                # spawn, not fork: the parent may hold torch's OpenMP threads, which fork does not copy.
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
                self._futures = [self._pool.submit(_analyse_path, p, every_face) for p in sorted(self._paths)]
            except (OSError, BrokenProcessPool) as err:
                log.warning("face workers could not start (%s); continuing in this process", err)
                self.close()

    def __enter__(self) -> FaceStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _answer(self, path: str, data: dict | None, every: dict | None, failure: tuple[str, str] | None
                ) -> list[tuple[str, str, Any, UnreadableImageError | None]]:
        group = self._paths.pop(path, [])
        if data is None:
            reason, kind = failure or ("unreadable", "corrupt")
            return [(p, sha, None, UnreadableImageError(reason, p, kind)) for p, sha in group]  # type: ignore[arg-type]
        analysis = FaceAnalysis.from_json(data)
        self.cache.stats["analysed"] += 1
        if group:
            self.cache.put(group[0][1], analysis)
            if every is not None:
                self.cache.put(_every_key(group[0][1]), FaceAnalysis.from_json(every))
        return [(p, sha, analysis, None) for p, sha in group]

    def __iter__(self) -> Iterator[tuple[str, str, FaceAnalysis | None, UnreadableImageError | None]]:
        for item in self._cached:
            yield (*item, None)
        self.analysing = True
        if self._pool is not None:
            try:
                for fut in as_completed(self._futures):
                    yield from self._answer(*fut.result())
            except BrokenProcessPool as err:
                # E.g. a script without an ``if __name__ == "__main__":`` guard, which spawned
                # workers re-run: finish in this process rather than fail.
                log.warning("face workers stopped (%s); continuing in this process", err)
            self.close()
        # Whatever the pool did not answer (no pool, or a broken one): in this process.
        for path in sorted(self._paths):
            yield from self._answer(*_analyse_path(path, self.every_face))
