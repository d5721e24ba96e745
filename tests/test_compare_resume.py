"""``compare`` survives interruption: killed (SIGKILL) at several points of a tiny run, the re-run
reuses what finished, resumes what was interrupted and ends with the metrics, predictions and
weights of an uninterrupted run; another configuration is refused, ``--fresh`` starts over; a
read-only run directory is a clear error that writes nothing.

Real subprocesses running the real CLI (``compare_child.py`` registers two tiny architectures and
kills the child at a named point); the smallest data and options (``--no-export --no-faces
--speed-repeats 1 --no-cache``) keep each run to a few seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import compare_child
from conftest import make_image_folder
from image_classifier.cli import main
from image_classifier.runs import RESUME_NAME

# Every test here runs whole compare runs in child processes (about 100 s for the file).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("compare_archs")]

TINY, TWO_PHASE = compare_child.TINY, compare_child.TWO_PHASE
CHILD = Path(compare_child.__file__)
OPTIONS = ["--seed", "1", "--val", "0.3", "--test", "0.3", "--speed-repeats", "1", "--no-export", "--no-faces",
           "--no-progress", "--no-cache"]


def _compare(data: Path, out: Path, *extra: str, kill_at: str | None = None, models: str = f"{TINY},{TWO_PHASE}",
             prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    kill = ["--kill-at", kill_at] if kill_at else []
    cmd = [*prefix, sys.executable, str(CHILD), *kill, "compare", str(data), "--models", models, "--out", str(out),
           *OPTIONS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _card(run: Path, arch: str) -> dict:
    return json.loads((run / "models" / arch / "model.json").read_text())


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if "seconds" not in k and k != "images_per_s"} for h in history]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {os.fspath(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("resume") / "data", {"red": 10, "blue": 10, "green": 10})


@pytest.fixture(scope="module")
def uninterrupted(data) -> Path:
    run = data.parent / "straight"
    proc = _compare(data, run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_killed_at_several_points_the_rerun_equals_an_uninterrupted_run(data, uninterrupted):
    run = data.parent / "killed"
    two = run / "models" / TWO_PHASE
    # 1. Killed inside the second model's training, just after its first checkpoint.
    _killed(_compare(data, run, kill_at=f"checkpoint:{TWO_PHASE}"))
    assert (two / RESUME_NAME).is_file() and _card(run, TWO_PHASE)["status"] == "training"
    assert _card(run, TINY)["status"] == "complete"
    # 2. The re-run reuses the first, resumes the second; killed after its final save.
    proc = _compare(data, run, kill_at=f"final:{TWO_PHASE}")
    _killed(proc)
    assert f"reusing {TINY} (finished, card matches)" in proc.stderr
    assert f"resuming {TWO_PHASE} from epoch 3" in proc.stderr  # after the 2 epochs of phase 1
    assert f"training {TINY}" not in proc.stderr
    assert (two / RESUME_NAME).is_file() and _card(run, TWO_PHASE)["status"] == "complete"
    # 3. Both finished: killed while writing the report.
    proc = _compare(data, run, kill_at="report")
    _killed(proc)
    assert f"reusing {TWO_PHASE} (finished, card matches)" in proc.stderr
    assert not (two / RESUME_NAME).exists(), "a finished model's stale resume state is removed"
    # 4. Completes.
    proc = _compare(data, run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training " not in proc.stderr and "resuming " not in proc.stderr

    done, ref = _metrics(run), _metrics(uninterrupted)
    # What choosing cost is timed, so it differs between two runs; everything else must not.
    assert _without_seconds([done["selection"]]) == _without_seconds([ref["selection"]])
    assert done["data"]["split"] == ref["data"]["split"]
    for mine, theirs in zip(done["models"], ref["models"], strict=True):
        assert mine["name"] == theirs["name"]
        assert mine["test"] == theirs["test"] and mine["validation"] == theirs["validation"]
        assert mine["errors"] == theirs["errors"]
        assert _without_seconds(mine["training"]["history"]) == _without_seconds(theirs["training"]["history"])
        assert _card(run, mine["name"])["weights_sha256"] == _card(uninterrupted, mine["name"])["weights_sha256"]
    assert done["pairwise"] == ref["pairwise"]
    assert (run / "predictions.csv").read_text() == (uninterrupted / "predictions.csv").read_text()
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name == RESUME_NAME]


def test_another_configuration_is_refused_and_fresh_starts_over(data, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["compare", str(data), "--models", TINY, "--out", str(run), *OPTIONS]
    assert main(argv) == 0
    capsys.readouterr()
    weights = run / "models" / TINY / "weights.safetensors"
    trained = weights.stat().st_mtime_ns

    # Same options again: everything reused, nothing retrained.
    assert main(argv) == 0
    assert f"reusing {TINY} (finished, card matches)" in capsys.readouterr().err
    assert weights.stat().st_mtime_ns == trained
    before = _tree(run)

    other_seed = [a if a != "1" else "2" for a in argv]  # --seed 2: the split is reused, training differs
    assert main(other_seed) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and f"{TINY}: seed: 1 in the run, 2 now" in err and "--fresh" in err
    assert main([*argv, "--set", "batch_size=4"]) == 2
    assert "recipe batch_size: 8 in the run, 4 now" in capsys.readouterr().err
    after = _tree(run)
    for name in ("split.csv", f"models/{TINY}/model.json", f"models/{TINY}/weights.safetensors"):
        assert after[name] == before[name], f"a refused run changed {name}"

    # --fresh removes compare's files (not the user's) and trains again with the new options.
    (run / "models" / TINY / "notes.txt").write_text("mine")
    assert main([*other_seed, "--fresh"]) == 0
    err = capsys.readouterr().err
    assert "--fresh: removed" in err and f"training {TINY}" in err and "reusing" not in err
    assert _card(run, TINY)["seed"] == 2
    assert (run / "models" / TINY / "notes.txt").read_text() == "mine"

    assert main(["compare", str(data), "--models", TINY, "--out", str(tmp_path / "empty"), "--resume", *OPTIONS]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--resume", "--fresh"])
    assert "not allowed with argument" in capsys.readouterr().err


def _read_only(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_run_directory_is_a_clear_error_that_writes_nothing(data, uninterrupted, tmp_path):
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # root writes anywhere; without CAP_DAC_OVERRIDE it obeys the permission bits like a user.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: a read-only directory cannot be simulated")
        prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search")
    run = tmp_path / "ro"
    shutil.copytree(uninterrupted, run, symlinks=True)
    _read_only(run)
    before = _tree(run)
    try:
        proc = _compare(data, run, prefix=prefix)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert f"cannot write to {run}" in proc.stderr and "choose another --out" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert _tree(run) == before, "nothing may be written, not even a temporary file"
    finally:
        _writable(run)
