"""What ``sort`` keeps in its output folder, written so that an interruption loses nothing.

``predictions.csv`` (one row per photo) and ``faces.csv`` (one row per face) grow as photos are
answered: each batch's face rows are appended and flushed first, then its photo rows, so a photo
counts as done exactly when its row is there (a row cut short by a kill is dropped when the folder
is opened again, and face rows without their photo row are dropped with it). With ``--copy`` or
``--link`` a photo is copied (or linked) into ``OUT/<label>/`` *before* its row is written, each
copy made under a temporary name and renamed, so a row always means its copy is complete. At the
end both files are rewritten sorted by path (atomically), with ``unreadable.csv``.

``sort.json`` records what the answers depend on (the model's weights, its classes, the threshold):
a later run into the same folder with another model or threshold is refused instead of mixing
answers.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from image_classifier.errors import OptionError
from image_classifier.fileio import atomic_write_json, atomic_write_text
from image_classifier.inference.rejection import UNKNOWN
from image_classifier.inference.rows import FACE_COLUMNS, PHOTO_COLUMNS
from image_classifier.runs import FACES_CSV_NAME, PREDICTIONS_CSV_NAME, SORT_RECORD_NAME, UNREADABLE_CSV_NAME

log = logging.getLogger(__name__)

UNREADABLE_COLUMNS = ("path", "reason", "kind")
#: What a later run must share with the first for their answers to be mixed in one folder.
RECORD_KEYS = ("weights_sha256", "classes", "keep", "reject")


def check_writable(out: Path) -> None:
    """Create ``out`` and prove a file can be written there; OptionError (before any work) if not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OptionError(f"--out {out}: cannot write there ({err.strerror or err}); choose a folder you can "
                          "write to") from None


def _read_rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """The complete rows of a CSV this module wrote (a last line cut short by a kill is dropped)."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the row being written when the process died
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is not None and tuple(reader.fieldnames) != tuple(columns):
        raise OptionError(f"{path} was not written by this version of `image-classifier sort` "
                          f"(columns {reader.fieldnames}); use another --out")
    return [row for row in reader if row.get("path")]


def _csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], header: bool = True) -> str:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def copy_into(out: Path, label: str, rel_path: str, source: Path, mode: str) -> Path:
    """``source`` copied (``mode="copy"``) or symlinked (``"link"``) to ``OUT/<label>/<rel_path>``,
    made under a temporary name and renamed. A complete copy already there is kept (also by a
    later run with ``--link``); a link is replaced by a copy with ``--copy``, or by a link to the
    file's current place. The original is only read."""
    target = out / label / rel_path
    if target.is_symlink():
        if mode == "link" and os.readlink(target) == os.fspath(source.resolve()):
            return target
    elif target.is_file() and target.stat().st_size == source.stat().st_size:
        return target  # a complete copy (made by an earlier run, with --copy) is kept
    target.parent.mkdir(parents=True, exist_ok=True)
    # A run killed mid-copy left its temporary file under its own process id: only one process
    # ever writes a given target (shards split the photos), so any such leftover is stale.
    for stale in target.parent.glob(f".{glob.escape(target.name)}.tmp-*"):
        stale.unlink(missing_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if mode == "link":
        os.symlink(source.resolve(), tmp)
    else:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)
    return target


class Journal:
    """The output folder of one ``sort``: the rows answered so far, and where new ones go."""

    def __init__(self, out: Path, record: dict[str, Any]) -> None:
        self.out = out
        self.record = record
        self.photos: dict[str, dict[str, str]] = {}  # path -> photo row (as strings once read back)
        self.faces: dict[str, list[dict[str, Any]]] = {}  # path -> face rows

    @property
    def predictions_csv(self) -> Path:
        return self.out / PREDICTIONS_CSV_NAME

    @property
    def faces_csv(self) -> Path:
        return self.out / FACES_CSV_NAME

    def open(self) -> Journal:
        """Read what an earlier run into this folder answered (refusing another model's answers),
        and make the files ready for appending."""
        check_writable(self.out)
        record_path = self.out / SORT_RECORD_NAME
        if record_path.is_file():
            try:
                before = json.loads(record_path.read_text())
            except (OSError, ValueError) as err:
                raise OptionError(f"{record_path} is unreadable ({err}): use another --out") from None
            diff = [k for k in RECORD_KEYS if before.get(k) != self.record.get(k)]
            if diff:
                raise OptionError(
                    f"--out {self.out} holds the answers of {before.get('model')} with "
                    + ", ".join(f"{k}={before.get(k)!r}" for k in diff if k != "classes")
                    + (" (other classes)" if "classes" in diff else "")
                    + f"; this run's differ ({', '.join(diff)}). Use another --out for this model or threshold")
        for row in _read_rows(self.predictions_csv, PHOTO_COLUMNS):
            self.photos[row["path"]] = row
        by_index: dict[str, dict[str, dict[str, str]]] = {}
        for row in _read_rows(self.faces_csv, FACE_COLUMNS):
            photo = self.photos.get(row["path"])
            # Face rows whose photo row never made it (or of an older content) are dropped: redone.
            if photo is not None and photo.get("sha256") == row.get("sha256"):
                by_index.setdefault(row["path"], {})[row["face"]] = row  # written twice: the last
        self.faces = {path: list(rows.values()) for path, rows in by_index.items()}
        atomic_write_json(record_path, self.record)
        # The files as read back (complete rows only), ready for appending.
        self._rewrite()
        return self

    def _rewrite(self, unreadable: Mapping[str, tuple[str, str]] | None = None) -> None:
        paths = sorted(self.photos)
        atomic_write_text(self.faces_csv, _csv_text((f for p in paths for f in sorted(
            self.faces.get(p, []), key=lambda f: int(f["face"]))), FACE_COLUMNS))
        atomic_write_text(self.predictions_csv, _csv_text((self.photos[p] for p in paths), PHOTO_COLUMNS))
        if unreadable is not None:
            atomic_write_text(self.out / UNREADABLE_CSV_NAME, _csv_text(
                ({"path": p, "reason": r, "kind": k} for p, (r, k) in sorted(unreadable.items())), UNREADABLE_COLUMNS))

    def done(self, path: str, sha256: str) -> bool:
        """Whether the file at ``path`` with this content is answered already."""
        row = self.photos.get(path)
        return row is not None and row.get("sha256") == sha256

    def by_content(self) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
        """sha256 -> (a photo row with that content, its face rows): a copy elsewhere is answered alike."""
        out: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for path, row in self.photos.items():
            out.setdefault(str(row.get("sha256")), (row, self.faces.get(path, [])))
        return out

    def append(self, photo_rows: Sequence[Mapping[str, Any]], face_rows: Sequence[Mapping[str, Any]],
               copy: tuple[str, Path] | None = None) -> None:
        """Record newly answered photos: copies first (``copy``: (mode, the folder sorted)), then the
        face rows, then the photo rows, each file flushed to disk before the next step."""
        if copy is not None:
            for row in photo_rows:
                copy_into(self.out, str(row["label"]), str(row["path"]), copy[1] / str(row["path"]), copy[0])
        for path, rows, columns in ((self.faces_csv, face_rows, FACE_COLUMNS),
                                    (self.predictions_csv, photo_rows, PHOTO_COLUMNS)):
            if not rows:
                continue
            with open(path, "a", encoding="utf-8", newline="") as fh:
                fh.write(_csv_text(rows, columns, header=False))
                fh.flush()
                os.fsync(fh.fileno())
        for row in photo_rows:
            self.photos[str(row["path"])] = dict(row)
            self.faces.pop(str(row["path"]), None)
        for row in face_rows:
            self.faces.setdefault(str(row["path"]), []).append(dict(row))

    def finish(self, present: Iterable[str], unreadable: Mapping[str, tuple[str, str]],
               copy: tuple[str, Path] | None = None) -> None:
        """Rewrite the files sorted by path, keeping the rows of the files still under the folder
        (``present``), with ``unreadable.csv``; with ``copy``, make sure every answered photo is
        in its folder (a run that added --copy, or answers reused from an earlier run)."""
        present = set(present)
        for path in [p for p in self.photos if p not in present]:
            self.photos.pop(path)
            self.faces.pop(path, None)
        if copy is not None:
            for path, row in self.photos.items():
                copy_into(self.out, str(row["label"]), path, copy[1] / path, copy[0])
        self._rewrite(unreadable)

    def counts(self) -> dict[str, int]:
        """Photos per answer (classes, then ``unknown``)."""
        out: dict[str, int] = {}
        for row in self.photos.values():
            out[str(row["label"])] = out.get(str(row["label"]), 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (kv[0] == UNKNOWN, kv[0])))
