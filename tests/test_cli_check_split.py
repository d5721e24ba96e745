"""The check and split commands, run through the real entry point."""
from __future__ import annotations

import csv
import json

import pytest
from conftest import make_image_folder

from image_classifier.cli import main
from image_classifier.data.options import SplitOptions
from image_classifier.errors import DatasetError


def test_check_json(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", {"cats": 5, "dogs": 4})
    (root / "dogs" / "zero.jpg").write_bytes(b"")
    assert main(["check", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 9 and out["classes"] == {"cats": 5, "dogs": 4}
    assert out["unreadable"] == [{"path": "dogs/zero.jpg", "reason": "empty file (0 bytes)"}]
    assert out["exact_duplicate_groups"] == [] and out["near_duplicate_groups"] == []
    assert out["label_conflicts"] == [] and out["usable"] is True


def test_check_table(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", {"cats": 3, "dogs": 3})
    assert main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "cats" in out and "Verdict: usable" in out and "Near duplicates: 0 pairs" in out


def test_check_unusable_exits_non_zero_with_message(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", {"cats": 3, "dogs": 1})
    assert main(["check", str(root), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["usable"] is False
    assert "class 'dogs' has 1 readable image" in captured.err


def test_check_missing_folder(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_split_writes_manifest_and_prints_sizes(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", {"cats": 20, "dogs": 10})
    out_csv = tmp_path / "split.csv"
    assert main(["split", str(root), "--out", str(out_csv), "--seed", "3", "--val", "0.2",
                 "--test", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "cats" in text and "total" in text and "manifest sha256" in text
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 30 and {r["seed"] for r in rows} == {"3"}
    counts = {(r["class"], r["split"]): 0 for r in rows}
    for r in rows:
        counts[(r["class"], r["split"])] += 1
    assert counts[("cats", "val")] == 4 and counts[("cats", "test")] == 2
    assert counts[("dogs", "val")] == 2 and counts[("dogs", "test")] == 1
    # Same data, same seed: the same manifest.
    first = out_csv.read_bytes()
    assert main(["split", str(root), "--out", str(out_csv), "--seed", "3", "--val", "0.2",
                 "--test", "0.1"]) == 0
    assert out_csv.read_bytes() == first


def test_split_refuses_bad_fractions_and_bad_data(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", {"cats": 5})
    assert main(["split", str(root), "--out", str(tmp_path / "s.csv"), "--val", "0.7",
                 "--test", "0.4"]) == 2
    # One check, the same from Python (before any file is read) and the command line.
    with pytest.raises(DatasetError) as err:
        SplitOptions(val=0.7, test=0.4)
    assert "leave nothing to train" in str(err.value)
    assert capsys.readouterr().err == f"image-classifier split: error: {err.value}\n"
    assert main(["split", str(root), "--out", str(tmp_path / "s.csv")]) == 2
    assert "only one class" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
