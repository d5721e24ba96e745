"""``image-classifier sort`` end to end with a real face model on real photos: the CSV files, copies
and links, unreadable files, a read-only OUT, resuming after SIGKILL and after Ctrl-C, answers
reused by content, another model refused, ``predict`` on a folder row for row, and ``torchrun``
with two processes giving the CSV one process gives."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import UNKNOWN_PEOPLE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def _env(face_model: dict) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "IMAGE_CLASSIFIER_CACHE_DIR": str(face_model["cache"]),
           "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    return env


def _cli(face_model: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "image_classifier", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(face_model))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def photos(face_model, tmp_path_factory) -> Path:
    """A folder to sort, nested: the face model's photos (copied, in sub-folders by person, as a
    person keeps them) and 4 strangers, plus a text file, an empty file and a truncated JPEG."""
    root = tmp_path_factory.mktemp("photos") / "my_photos"
    for cls in sorted(p for p in face_model["data"].iterdir() if p.is_dir()):
        for f in sorted(cls.iterdir())[:8]:
            dest = root / "2019" / cls.name.split()[0].lower() / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f.resolve(), dest)
    if UNKNOWN_PEOPLE.is_dir():
        for f in sorted(UNKNOWN_PEOPLE.iterdir())[:4]:
            (root / "strangers").mkdir(exist_ok=True)
            shutil.copyfile(f, root / "strangers" / f.name)
    (root / "notes.jpg").write_text("not a photo at all\n")
    (root / "empty.png").write_bytes(b"")
    good = next((root / "2019" / "kobe").iterdir()).read_bytes()
    (root / "cut.jpg").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="module")
def sorted_once(face_model, photos, tmp_path_factory) -> dict:
    """One uninterrupted ``sort --copy``, the reference the other runs are compared with."""
    before = {p: _sha(p) for p in photos.rglob("*") if p.is_file()}
    out = tmp_path_factory.mktemp("sorted") / "out"
    run = _cli(face_model, "sort", str(face_model["model"]), str(photos), "--out", str(out), "--copy",
               "--backend", "torch", "--no-progress")
    assert run.returncode == 0, run.stderr[-3000:]
    return {"out": out, "run": run, "before": before}


def test_every_photo_is_answered_and_copied(face_model, photos, sorted_once):
    out = sorted_once["out"]
    rows = _rows(out / "predictions.csv")
    readable = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*")
                      if p.is_file() and p.name not in ("notes.jpg", "empty.png", "cut.jpg"))
    assert [r["path"] for r in rows] == readable  # every photo, once, sorted by path
    classes = json.loads((face_model["model"] / "model.json").read_text())["classes"]
    for r in rows:
        assert r["label"] in (*classes, "unknown") and r["closest"] in classes
        assert 0 < float(r["probability"]) <= 1
        assert r["sha256"] == _sha(photos / r["path"]) and r["model"] == "model"
        copy = out / r["label"] / r["path"]
        assert copy.is_file() and not copy.is_symlink() and _sha(copy) == r["sha256"]
    # Nothing else was put into the class folders, and the originals are untouched.
    copies = sorted(p.relative_to(out).as_posix() for d in [*classes, "unknown"] if (out / d).is_dir()
                    for p in (out / d).rglob("*") if p.is_file())
    assert copies == sorted(f"{r['label']}/{r['path']}" for r in rows)
    assert {p: _sha(p) for p in photos.rglob("*") if p.is_file()} == sorted_once["before"]
    # Most of the athletes' own photos (the model's training and validation photos among them) are named.
    athletes = [r for r in rows if r["path"].startswith("2019/")]
    by_folder = {"kobe": "Kobe Bryant", "maria": "Maria Sharapova", "ronaldo": "ronaldo"}
    right = sum(r["label"] == by_folder[r["path"].split("/")[1]] for r in athletes)
    assert right >= 0.75 * len(athletes)


def test_faces_csv_has_one_row_per_face_and_marks_the_deciding_one(sorted_once):
    out = sorted_once["out"]
    photos = {r["path"]: r for r in _rows(out / "predictions.csv")}
    faces = _rows(out / "faces.csv")
    for path, row in photos.items():
        mine = [f for f in faces if f["path"] == path]
        assert len(mine) == int(row["faces_found"]) and [int(f["face"]) for f in mine] == list(range(len(mine)))
        decided = [f for f in mine if f["decided"] == "True"]
        if row["face_box"]:
            assert len(decided) == 1 and decided[0]["box"] == row["face_box"]
            assert int(row["face_index"]) == int(decided[0]["face"])
            assert decided[0]["distance"] == row["face_distance"]
            if row["label"] != "unknown":
                assert decided[0]["label"] == row["label"]
        else:
            assert decided == [] and row["face_index"] == ""


def test_unreadable_files_are_listed_with_the_reason(sorted_once):
    out = sorted_once["out"]
    bad = {r["path"]: r for r in _rows(out / "unreadable.csv")}
    assert sorted(bad) == ["cut.jpg", "empty.png", "notes.jpg"]
    assert bad["empty.png"]["kind"] == "empty" and "empty" in bad["empty.png"]["reason"]
    assert bad["notes.jpg"]["kind"] == "unsupported" and "text" in bad["notes.jpg"]["reason"]
    assert bad["cut.jpg"]["kind"] == "corrupt"
    stdout = sorted_once["run"].stdout
    assert "3 file(s) could not be read" in stdout and "notes.jpg: not an image" in stdout


def test_predict_on_the_folder_gives_the_same_answers_row_for_row(face_model, photos, sorted_once):
    run = _cli(face_model, "predict", str(face_model["model"]), str(photos), "--json", "--backend", "torch")
    assert run.returncode == 1  # the three unreadable files
    predictions = json.loads(run.stdout)["predictions"]
    answered = [p for p in predictions if "error" not in p]
    rows = _rows(sorted_once["out"] / "predictions.csv")
    assert [Path(p["image"]).relative_to(photos).as_posix() for p in answered] == [r["path"] for r in rows]
    for p, r in zip(answered, rows):
        assert (("unknown" if p["unknown"] else p["top"][0]["label"]), p["closest"]["label"]) == (r["label"], r["closest"])
        assert abs(p["closest"]["probability"] - float(r["probability"])) < 1e-6
        assert p["faces_found"] == int(r["faces_found"]) and p["face_distance"] == (
            float(r["face_distance"]) if r["face_distance"] else None)
        assert (p["face"] or None) == ([float(v) for v in r["face_box"].split()] if r["face_box"] else None)
    assert sorted(p["image"] for p in predictions if "error" in p) == sorted(
        str(photos / n) for n in ("cut.jpg", "empty.png", "notes.jpg"))


def test_a_second_run_skips_what_is_done_and_reuses_answers_by_content(face_model, photos, sorted_once, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sorted_once["out"], out, symlinks=True)
    extra = photos.parent / "more"
    shutil.copytree(photos, extra)
    src = next((extra / "2019" / "maria").iterdir())
    shutil.copyfile(src, extra / "same-as-maria.jpg")  # a copy under another name: answered by content
    try:
        run = _cli(face_model, "sort", str(face_model["model"]), str(extra), "--out", str(out), "--link",
                   "--backend", "torch", "--no-progress")
    finally:
        shutil.rmtree(extra)
    assert run.returncode == 0, run.stderr[-3000:]
    n = len(_rows(sorted_once["out"] / "predictions.csv"))
    assert f"{n + 1} photos answered" in run.stdout and "0 now" in run.stdout
    assert f"{n} already done, 1 from a copy with the same content" in run.stdout
    rows = {r["path"]: r for r in _rows(out / "predictions.csv")}
    twin = rows["same-as-maria.jpg"]
    assert {k: v for k, v in twin.items() if k != "path"} == {
        k: v for k, v in rows[src.relative_to(extra).as_posix()].items() if k != "path"}
    link = out / twin["label"] / "same-as-maria.jpg"
    assert link.is_symlink()  # --link on the second run: a link for the new photo, the copies kept


def test_another_model_or_threshold_into_the_same_out_is_refused(face_model, photos, sorted_once):
    run = _cli(face_model, "sort", str(face_model["model"]), str(photos), "--out", str(sorted_once["out"]),
               "--keep", "0.8", "--no-progress")
    assert run.returncode == 2
    assert "holds the answers of" in run.stderr and "keep=0.95" in run.stderr and "another --out" in run.stderr


def test_a_read_only_out_is_refused_before_any_work(face_model, photos, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere permissions allow nothing: use a file system that refuses
        out = Path("/sys/image-classifier-sort-test")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        out = locked / "out"
    run = _cli(face_model, "sort", str(face_model["model"]), str(photos), "--out", str(out), "--no-progress")
    assert run.returncode == 2, run.stderr
    assert f"--out {out}: cannot write there" in run.stderr
    assert "backend" not in run.stderr  # refused before the model was loaded
    assert not out.exists()


def _interrupted(face_model: dict, photos: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    """A sort stopped by ``sig`` once its second batch is on disk (its own log line says so)."""
    cmd = [sys.executable, "-m", "image_classifier", "-v", "sort", str(face_model["model"]), str(photos),
           "--out", str(out), "--copy", "--batch-size", "4", "--backend", "torch", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(face_model))
    seen = 0
    for line in proc.stderr:  # blocks until the child writes: no sleeping
        if line.startswith("sort: wrote batch"):
            seen += 1
            if seen == 2:
                proc.send_signal(sig)
                break
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_an_interrupted_sort_loses_nothing_and_the_next_run_finishes_it(face_model, photos, sorted_once, tmp_path,
                                                                       sig):
    out = tmp_path / "out"
    stopped = _interrupted(face_model, photos, out, sig)
    assert stopped.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), stopped.stderr[-2000:]
    kept = _rows(out / "predictions.csv")
    assert len(kept) >= 8  # two batches of 4 were written before the signal
    reference = {r["path"]: r for r in _rows(sorted_once["out"] / "predictions.csv")}
    for r in kept:  # what was written is complete and right, and its copy is there
        assert r == reference[r["path"]]
        assert _sha(out / r["label"] / r["path"]) == r["sha256"]
    if sig == signal.SIGINT:  # Ctrl-C: the files are left sorted, as a finished run leaves them
        assert [r["path"] for r in kept] == sorted(r["path"] for r in kept)
    again = _cli(face_model, "sort", str(face_model["model"]), str(photos), "--out", str(out), "--copy",
                 "--backend", "torch", "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(kept)} already done" in again.stdout
    for name in ("predictions.csv", "faces.csv", "unreadable.csv"):
        assert _rows(out / name) == _rows(sorted_once["out"] / name), name
    assert not list(out.rglob(".*.tmp-*"))  # no half-made copy left behind


def test_two_processes_under_torchrun_write_the_csv_one_process_writes(face_model, photos, sorted_once, tmp_path):
    out = tmp_path / "out"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "image_classifier", "sort",
           str(face_model["model"]), str(photos), "--out", str(out), "--backend", "torch", "--device", "cpu",
           "--batch-size", "8", "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=_env(face_model), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "2 processes" in run.stderr and run.stdout.count("photos answered") == 1  # rank 0 reports
    one = _rows(sorted_once["out"] / "predictions.csv")
    two = _rows(out / "predictions.csv")
    assert [r["path"] for r in two] == [r["path"] for r in one]
    for a, b in zip(one, two):
        assert abs(float(a.pop("probability")) - float(b.pop("probability"))) < 1e-5  # batches differ
        assert a == b
    assert _rows(out / "unreadable.csv") == _rows(sorted_once["out"] / "unreadable.csv")


def test_a_copy_left_half_made_by_a_killed_process_is_removed_when_the_copy_is_made(tmp_path):
    from image_classifier.sorting.journal import copy_into

    source = tmp_path / "in" / "a b.jpg"
    source.parent.mkdir()
    source.write_bytes(b"photo" * 100)
    out = tmp_path / "out"
    (out / "Kobe").mkdir(parents=True)
    stale = out / "Kobe" / ".a b.jpg.tmp-999999"  # another process's id: it was killed mid-copy
    stale.write_bytes(b"pho")
    other = out / "Kobe" / ".ab.jpg.tmp-999999"  # another photo's: not this copy's business
    other.write_bytes(b"x")
    target = copy_into(out, "Kobe", "a b.jpg", source, "copy")
    assert target.read_bytes() == source.read_bytes()
    assert not stale.exists() and other.exists()
