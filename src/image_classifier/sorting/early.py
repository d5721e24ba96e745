"""``sort``'s first steps, run before PyTorch loads: the folder listed and hashed, and for a face
model the face workers started (a light module: nothing here imports torch).

Why: finding the faces is most of an uncached sort, and importing the model's stack (PyTorch,
torchvision, ONNX Runtime) took 10 s on the busy 2-core machine of docs/benchmarks.md. The command
line starts the workers here, then loads the model while they work: the faces start that much
sooner. Under ``torchrun`` each process lists and hashes its own share once the process group is
up, so nothing starts early there.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from image_classifier.card import read_card
from image_classifier.data.scan import list_files
from image_classifier.errors import OptionError
from image_classifier.faces import FaceCache, FaceStream
from image_classifier.fileio import sha256_file
from image_classifier.optionspec import cache_root
from image_classifier.runs import resolve_model_dir
from image_classifier.sorting.journal import check_writable
from image_classifier.sorting.options import SortOptions

#: (path under the folder, path, sha256 or None, why it could not be read or None)
Hashed = tuple[str, Path, "str | None", "str | None"]


def check_folders(data: str | os.PathLike, out: str | os.PathLike) -> tuple[Path, Path]:
    """(the folder to sort, the output folder), or OptionError before any work."""
    data_dir, out_dir = Path(data), Path(out)
    if not data_dir.is_dir():
        raise OptionError(f"{data} is not a folder: give the folder of photos to sort")
    if out_dir.resolve() == data_dir.resolve():
        raise OptionError("--out must not be the folder being sorted (it may be a folder inside it, left out)")
    return data_dir, out_dir


def hash_files(files: list[tuple[str, Path]], progress: bool) -> Iterator[Hashed]:
    """(rel, path, sha256 or None, why not) per file, threads reading in parallel (I/O bound)."""
    def one(item: tuple[str, Path]) -> Hashed:
        try:
            return item[0], item[1], sha256_file(item[1]), None
        except OSError as err:
            return item[0], item[1], None, f"cannot read file: {err.strerror or err}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        yield from tqdm(pool.map(one, files), total=len(files), desc="reading", unit="file", leave=False,
                        disable=not progress or len(files) < 200, dynamic_ncols=True)


def face_cache(options: SortOptions, workers: int) -> FaceCache:
    """The face cache a sort reads and fills (``--cache-dir``, default the decoded-image cache's root)."""
    return FaceCache(cache_root(options.cache, options.cache_dir), workers=workers)


def local_cores(processes_here: int = 1) -> int:
    """This process's share of the machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes_here))


@dataclass
class EarlyFaces:
    """What :func:`start_faces` did: the listing, its hashes, and the face workers at work."""

    files: list[Path]
    rels: list[str]
    hashed: list[Hashed]
    cache: FaceCache
    stream: FaceStream


def start_faces(model: str | os.PathLike, data: str | os.PathLike, options: SortOptions) -> EarlyFaces | None:
    """For a face model sorted by one process: check the folders (an ``--out`` that cannot be written
    is refused here, before any work), list and hash the files, and start finding their faces.
    None otherwise (the sort then does all of it itself)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return None
    data_dir, out = check_folders(data, options.out)
    model_dir = resolve_model_dir(model)
    if not read_card(model_dir).finds_faces:
        return None
    check_writable(out)
    files = list_files(data_dir, exclude=out)
    rels = [f.relative_to(data_dir).as_posix() for f in files]
    hashed = list(hash_files(list(zip(rels, files)), options.progress))
    cache = face_cache(options, options.workers or local_cores())
    stream = FaceStream(cache, [(path, sha) for _, path, sha, _ in hashed if sha is not None], every_face=True)
    return EarlyFaces(files, rels, hashed, cache, stream)
