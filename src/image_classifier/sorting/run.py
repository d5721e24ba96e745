"""``sort MODEL DIR --out OUT``: every photo under a folder answered by a saved model, written as it goes.

Steps, in one process or in each process of a ``torchrun`` job (which then splits the photos):

1. **List and hash.** Every file under DIR, at any depth (hidden files and OUT itself left out),
   sorted by path; each file's SHA-256. A photo whose row is already in OUT with the same content
   is done; one whose content is answered under another path gets that answer without computing
   it again. Each process takes a contiguous share of the list (:func:`~image_classifier.training.distributed.shard`).
2. **Faces first** (a face model): the files' faces are found in worker processes (dlib; one per
   core, or per core of this process's share of the machine under ``torchrun``), started before
   the model loads, so detection never waits for it; answers cached by content
   (``~/.cache/image-classifier``) cost nothing the next time.
3. **Answer in batches** as the faces arrive: the classifier's own
   :meth:`~image_classifier.inference.classifier.Classifier.predict_details` (the face head, and
   the whole-image network on the GPU with ``--device`` for photos without a face like a known
   person's), the "none of these" rule at ``--keep``. A file that cannot be read is listed in
   ``unreadable.csv`` with the reason, never fatal.
4. **Write** (rank 0 of a job, the others' rows gathered batch by batch): copies or links first,
   then the face rows, then the photo rows, flushed; see :mod:`.journal`. A kill at any moment
   loses only the batch being computed; the next run with the same OUT continues.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from image_classifier.data.decode import decode_each
from image_classifier.data.scan import list_files
from image_classifier.errors import UnreadableImageError
from image_classifier.faces import FaceStream
from image_classifier.inference.loading import load_model
from image_classifier.inference.model import Model
from image_classifier.inference.rejection import RejectionRule
from image_classifier.inference.rows import face_rows, photo_row
from image_classifier.runs import resolve_model_dir
from image_classifier.saved_model import ModelCard, read_card
from image_classifier.sorting.early import EarlyFaces, check_folders, face_cache, hash_files, local_cores
from image_classifier.sorting.journal import Journal
from image_classifier.sorting.options import COPY_MODES, SortOptions
from image_classifier.training.distributed import (
    Dist, broadcast_object, gather_objects, init_from_environment, shard, shutdown,
)
from image_classifier.version import __version__

log = logging.getLogger(__name__)


@dataclass
class SortResult:
    """What a sort did (on rank 0 of a job: for the whole job)."""

    out: Path
    model: str
    photos: int  # photos with an answer in OUT now
    answered: int  # answered by this run
    reused: int  # answered from another file with the same content
    skipped: int  # already answered by an earlier run
    unreadable: dict[str, tuple[str, str]]  # path -> (reason, kind)
    counts: dict[str, int]  # answer -> photos
    seconds: float
    tradeoff: dict[str, Any] | None = None
    processes: int = 1
    is_main: bool = True
    backend: str = ""
    device: str = ""
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Photos answered per second by this run (all processes)."""
        return self.answered / self.seconds if self.seconds > 0 else 0.0


def _record(card: ModelCard, model_dir: Path, keep: float | None, reject: bool) -> dict[str, Any]:
    rule = RejectionRule.from_card(card.rejection)
    return {"model": str(model_dir), "weights_sha256": card.weights_sha256, "classes": card.classes,
            "keep": (keep if keep is not None else rule.keep) if reject and rule else None,
            "reject": bool(reject and rule), "image_classifier": __version__}


def sort_folder(model: str | os.PathLike, data: str | os.PathLike, options: SortOptions, *,
                early: EarlyFaces | None = None) -> SortResult:
    """Answer every photo under ``data`` with the model in ``model`` (a model or run directory)
    and write ``options.out`` (see the module docstring and :mod:`.journal`). Under ``torchrun``
    each process answers its share; rank 0 writes and returns the whole job's result. ``early``:
    what :func:`~image_classifier.sorting.early.start_faces` started for this sort (the command
    line starts the face workers before this module's imports load PyTorch)."""
    t0 = time.perf_counter()
    data_dir, out = check_folders(data, options.out)
    model_dir = resolve_model_dir(model)
    card = read_card(model_dir)
    d, device = init_from_environment(options.device)
    try:
        return _sort(model_dir, card, data_dir, out, options, d, device, t0, early)
    finally:
        if early is not None:
            early.stream.close()
        shutdown(d)


def _sort(model_dir: Path, card: ModelCard, data_dir: Path, out: Path, options: SortOptions, d: Dist,
          device: Any, t0: float, early: EarlyFaces | None) -> SortResult:
    stages: dict[str, float] = {}
    journal = Journal(out, _record(card, model_dir, options.keep, options.reject))
    if d.is_main:
        journal.open()  # a folder that cannot be written, or another model's answers: refused now
    # Only rank 0 reads OUT; it tells the others what is answered already.
    known: dict[str, str] = broadcast_object(d, {p: r["sha256"] for p, r in journal.photos.items()})
    contents = broadcast_object(d, journal.by_content())
    t = time.perf_counter()
    if early is not None:
        files, rels, hashed = early.files, early.rels, early.hashed
        mine = list(range(len(files)))
    else:
        files = list_files(data_dir, exclude=out)
        rels = [f.relative_to(data_dir).as_posix() for f in files]
        mine = list(shard(len(files), d))
        hashed = list(hash_files([(rels[i], files[i]) for i in mine], options.progress and d.is_main))
    stages["read_hash"] = time.perf_counter() - t
    unreadable: dict[str, tuple[str, str]] = {}
    todo: list[tuple[str, Path, str]] = []
    reused_photos: list[dict[str, Any]] = []
    reused_faces: list[dict[str, Any]] = []
    skipped = 0
    for rel, path, sha, why in hashed:
        if sha is None:
            unreadable[rel] = (why or "unreadable", "io")
        elif known.get(rel) == sha:
            skipped += 1
        elif sha in contents:
            row, faces = contents[sha]
            reused_photos.append({**row, "path": rel})
            reused_faces.extend({**f, "path": rel} for f in faces)
        else:
            todo.append((rel, path, sha))

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if d.enabled else 1
    cache = early.cache if early is not None else face_cache(options, options.workers or local_cores(local))
    stream = None
    threads = torch.get_num_threads()
    if card.finds_faces:
        # Started before the model loads (by the command line, before PyTorch loaded: see .early):
        # the workers find faces meanwhile.
        # Every face is described there too: each face gets its own answer.
        stream = early.stream if early is not None else FaceStream(
            cache, [(path, sha) for _, path, sha in todo], every_face=True)
        if stream.todo:
            # The face workers take the cores; the whole-image network (only for the photos without
            # a face like a known person's) runs on one thread beside them. Measured on 2 busy cores:
            # MobileNetV2 at 21 ms a photo on 1 thread, 100-300 ms on 2 threads fighting for the
            # cores. With every face cached there are no workers, and the network has every core.
            torch.set_num_threads(1)
    try:
        t = time.perf_counter()
        classifier = load_model(model_dir, options.backend, face_cache=cache, reject=options.reject, device=device)
        if options.keep is not None:
            classifier = classifier.with_keep(options.keep)
        stages["load_model"] = time.perf_counter() - t
        trade = classifier.tradeoff() if classifier.reject else None
        if d.is_main:
            log.info("%s: backend %s (%s), device %s", classifier.name, classifier.backend_name,
                     classifier.backend_reason, classifier.device)
        batches = max(1, *(gather_objects(d, math.ceil(len(todo) / options.batch_size))))
        copy = (options.copy, data_dir) if options.copy else None
        bar = tqdm(total=len(mine), initial=skipped, unit="photo", desc="sorting",
                   disable=not (options.progress and d.is_main), dynamic_ncols=True)
        answered = 0
        try:
            work = _batches(todo, stream, options.batch_size)
            for k in range(batches):
                # The first batch also carries the answers reused from other files with the same content.
                photo_rows = list(reused_photos) if k == 0 else []
                face_rows_ = list(reused_faces) if k == 0 else []
                handled = len(reused_photos) + len(unreadable) if k == 0 else 0
                batch = next(work, None)
                if batch is not None:
                    rows, faces, failed = _answer(classifier, batch, stages)
                    photo_rows += rows
                    face_rows_ += faces
                    answered += len(rows)
                    unreadable.update(failed)
                    handled += len(batch)
                parts = gather_objects(d, (photo_rows, face_rows_))
                if d.is_main:
                    t = time.perf_counter()
                    written = [r for p in parts for r in p[0]]
                    journal.append(written, [f for p in parts for f in p[1]], copy)
                    stages["write"] = stages.get("write", 0.0) + time.perf_counter() - t
                    log.debug("sort: wrote batch %d of %d (%d photos)", k + 1, batches, len(written))
                bar.update(handled)
        finally:
            bar.close()
        totals = gather_objects(d, (answered, len(reused_photos), skipped, unreadable))
    except KeyboardInterrupt:
        if d.is_main:  # what was answered is on disk; leave the files complete and sorted
            journal.finish(rels, unreadable)
        raise
    finally:
        if stream is not None:
            stream.close()
        torch.set_num_threads(threads)
    answered = sum(t[0] for t in totals)
    unreadable = {k: v for t in totals for k, v in t[3].items()}
    if d.is_main:
        t = time.perf_counter()
        journal.finish(rels, unreadable, copy)
        stages["write"] = stages.get("write", 0.0) + time.perf_counter() - t
    return SortResult(out=out, model=classifier.name, photos=len(journal.photos), answered=answered,
                      reused=sum(t[1] for t in totals), skipped=sum(t[2] for t in totals), unreadable=unreadable,
                      counts=journal.counts(), seconds=time.perf_counter() - t0, tradeoff=trade,
                      processes=d.world_size, is_main=d.is_main, backend=classifier.backend_name,
                      device=str(classifier.device), stages=stages)


def _batches(todo: list[tuple[str, Path, str]], stream: FaceStream | None,
             size: int) -> Iterator[list[tuple[str, Path, str, UnreadableImageError | None]]]:
    """The files to answer, ``size`` at a time: (rel, path, sha256, why it is unreadable or None).
    With a face stream, in the order the workers finish them (unreadable ones are known then)."""
    if stream is None:
        for start in range(0, len(todo), size):
            yield [(rel, path, sha, None) for rel, path, sha in todo[start:start + size]]
        return
    by_path = {os.fspath(path): (rel, path, sha) for rel, path, sha in todo}
    batch: list[tuple[str, Path, str, UnreadableImageError | None]] = []
    for path, _sha, _analysis, error in stream:
        if path not in by_path:  # started early for every file: one answered already
            continue
        rel, full, sha = by_path[path]
        batch.append((rel, full, sha, error))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _answer(classifier: Model, batch: list[tuple[str, Path, str, UnreadableImageError | None]],
            stages: dict[str, float]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, tuple[str, str]]]:
    """Photo rows, face rows and unreadable files (path -> (reason, kind)) of one batch."""
    failed = {rel: (err.reason, err.kind) for rel, _, _, err in batch if err is not None}
    items = [b for b in batch if b[3] is None]
    t = time.perf_counter()
    decoded = decode_each([path for _, path, _, _ in items], classifier.decode, what=None)
    stages["decode"] = stages.get("decode", 0.0) + time.perf_counter() - t
    for i, err in decoded.failures.items():
        failed[items[i][0]] = (err.reason, err.kind)
    rows: list[dict[str, Any]] = []
    faces: list[dict[str, Any]] = []
    if decoded.images:
        t = time.perf_counter()
        probs, details = classifier.predict_details(decoded.images)
        stages["predict"] = stages.get("predict", 0.0) + time.perf_counter() - t
        for i, row, detail in zip(decoded.kept, probs, details):
            rel, _, sha, _ = items[i]
            rows.append(photo_row(rel, row, detail, classifier.classes, classifier.name, sha))
            faces.extend(face_rows(rel, detail, classifier.name, sha))
    return rows, faces, failed


__all__ = ["COPY_MODES", "SortOptions", "SortResult", "sort_folder"]
