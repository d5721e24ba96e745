"""Split properties: stratified, group-safe, deterministic, saved, and verified when loaded."""
from __future__ import annotations

import csv
import io
import random
import shutil
from dataclasses import replace

import pytest

from conftest import make_image_folder, photo_like
from image_classifier.data.check import audit_dataset
from image_classifier.data.split import (
    SUBSETS, class_targets, load_split, make_split, resolve_split)
from image_classifier.errors import DatasetError, ManifestMismatchError


def add_duplicates(root, cls: str, n_groups: int, size: int, start_seed: int) -> None:
    """n_groups groups of ``size`` copies (exact copies and re-encoded near copies) in class ``cls``."""
    for g in range(n_groups):
        base = photo_like(start_seed + g, (160, 120))
        for k in range(size):
            path = root / cls / f"dup{g}_{k}.jpg"
            if k == 0:
                base.save(path, quality=90)
            elif k == 1:
                shutil.copy(root / cls / f"dup{g}_0.jpg", path)  # exact duplicate
            else:
                base.resize((120, 90)).save(path, quality=60)  # near duplicate


@pytest.fixture(scope="module")
def dup_data(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("dups"), {"a": 30, "b": 21, "c": 13})
    add_duplicates(root, "a", 4, 2, 100)
    add_duplicates(root, "b", 3, 3, 200)
    add_duplicates(root, "c", 1, 3, 300)
    return root, audit_dataset(root)


def test_fixture_really_has_groups(dup_data):
    _, audit = dup_data
    assert len(audit.groups) == 8
    assert audit.classes == {"a": 38, "b": 30, "c": 16}


@pytest.mark.parametrize("seed", range(6))
def test_duplicate_groups_never_cross_subsets(dup_data, seed):
    root, audit = dup_data
    split = make_split(root, seed=seed, audit=audit)
    where = {r.rel_path: r.subset for r in split.records}
    for group in audit.groups:
        assert len({where[p] for p in group}) == 1, group
    assert split.group_summary()["groups_crossing_subsets"] == 0
    assert split.group_summary()["duplicate_groups"] == 8


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("val,test", [(0.15, 0.15), (0.2, 0.1), (0.25, 0.25)])
def test_stratified_within_one_image_per_class(dup_data, seed, val, test):
    root, audit = dup_data
    split = make_split(root, seed=seed, val=val, test=test, audit=audit)
    sizes = split.sizes()
    for cls, n in audit.classes.items():
        assert sum(sizes[s][cls] for s in SUBSETS) == n
        assert abs(sizes["val"][cls] - n * val) <= 1, (cls, sizes)
        assert abs(sizes["test"][cls] - n * test) <= 1, (cls, sizes)


def test_every_image_is_in_exactly_one_subset(dup_data):
    root, audit = dup_data
    split = make_split(root, audit=audit)
    paths = [r.rel_path for r in split.records]
    assert sorted(paths) == sorted(r.rel_path for r in audit.records)
    assert len(set(paths)) == len(paths)
    assert sum(len(split.subset(s)) for s in SUBSETS) == len(paths)
    assert all(r.label == split.classes.index(r.class_name) for r in split.records)


def test_deterministic_and_independent_of_listing_order(dup_data):
    root, audit = dup_data
    first = make_split(root, seed=3, audit=audit)
    again = make_split(root, seed=3, audit=audit)
    assert first.manifest_text() == again.manifest_text()
    shuffled = list(audit.records)
    random.Random(0).shuffle(shuffled)
    groups = [list(reversed(g)) for g in reversed(audit.groups)]
    permuted = replace(audit, records=shuffled, groups=groups)
    assert make_split(root, seed=3, audit=permuted).manifest_sha256 == first.manifest_sha256
    other = make_split(root, seed=4, audit=audit)
    assert other.manifest_sha256 != first.manifest_sha256


def test_seeds_give_different_test_sets(dup_data):
    root, audit = dup_data
    tests = {frozenset(r.rel_path for r in make_split(root, seed=s, audit=audit).subset("test"))
             for s in range(5)}
    assert len(tests) == 5


def test_class_targets():
    assert class_targets(110, 0.15, 0.15) == {"train": 76, "val": 17, "test": 17}
    assert class_targets(159, 0.15, 0.15) == {"train": 111, "val": 24, "test": 24}
    assert class_targets(5, 0.1, 0.1) == {"train": 3, "val": 1, "test": 1}  # every subset sees it
    assert class_targets(2, 0.15, 0.15)["train"] >= 1
    assert class_targets(10, 0.0, 0.2) == {"train": 8, "val": 0, "test": 2}


def test_bad_fractions(image_folder):
    with pytest.raises(DatasetError, match="leave nothing to train"):
        make_split(image_folder, val=0.5, test=0.5)
    with pytest.raises(DatasetError, match="between 0 and 1"):
        make_split(image_folder, val=-0.1)


def test_unusable_data_cannot_be_split(tmp_path):
    make_image_folder(tmp_path, {"a": 4, "b": 1})
    with pytest.raises(DatasetError, match="class 'b' has 1"):
        make_split(tmp_path)


# ---- manifest ---------------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    root = make_image_folder(tmp_path / "data", {"a": 8, "b": 8})
    split = make_split(root, seed=1)
    csv_path = tmp_path / "split.csv"
    split.save(csv_path)
    return root, split, csv_path


def test_manifest_columns_and_round_trip(saved):
    root, split, csv_path = saved
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert list(rows[0]) == ["rel_path", "sha256", "class", "split", "group", "seed",
                             "val_fraction", "test_fraction"]
    assert rows[0]["seed"] == "1" and rows[0]["val_fraction"] == "0.15"
    import hashlib
    assert hashlib.sha256(csv_path.read_bytes()).hexdigest() == split.manifest_sha256
    loaded = load_split(csv_path, root)
    assert loaded.manifest_sha256 == split.manifest_sha256
    assert [(r.rel_path, r.subset, r.label) for r in loaded.records] == \
           [(r.rel_path, r.subset, r.label) for r in split.records]
    assert (loaded.seed, loaded.val, loaded.test) == (1, 0.15, 0.15)
    assert loaded.records[0].path == root / loaded.records[0].rel_path
    assert not list(csv_path.parent.glob(".split.csv.*"))  # no temp file left behind


def test_changed_file_is_detected(saved):
    root, _, csv_path = saved
    photo_like(1, (32, 32)).save(root / "a" / "a_003.jpg")
    with pytest.raises(ManifestMismatchError) as info:
        load_split(csv_path, root)
    msg = str(info.value)
    assert "1 changed (a/a_003.jpg)" in msg and "image-classifier split" in msg and "--split" in msg


def test_missing_file_is_detected(saved):
    root, _, csv_path = saved
    (root / "b" / "b_002.jpg").unlink()
    with pytest.raises(ManifestMismatchError, match=r"1 missing \(b/b_002.jpg\)"):
        load_split(csv_path, root)


def test_new_image_is_detected_but_new_junk_is_not(saved):
    root, _, csv_path = saved
    (root / "a" / "broken.jpg").write_bytes(b"")  # unreadable: skipped everywhere, not "new"
    (root / ".DS_Store").write_bytes(b"junk")
    load_split(csv_path, root)
    photo_like(2, (32, 32)).save(root / "b" / "extra.png")
    with pytest.raises(ManifestMismatchError, match=r"1 new \(b/extra.png\)"):
        load_split(csv_path, root)


def test_many_offenders_are_summarised(saved):
    root, _, csv_path = saved
    for p in sorted((root / "a").iterdir())[:7]:
        p.unlink()
    with pytest.raises(ManifestMismatchError, match=r"7 missing \(.* and 2 more\)"):
        load_split(csv_path, root)


def test_not_a_manifest(tmp_path, image_folder):
    bad = tmp_path / "other.csv"
    bad.write_text("path,label\nx.jpg,a\n")
    with pytest.raises(ManifestMismatchError, match="not a split manifest"):
        load_split(bad, image_folder)
    with pytest.raises(ManifestMismatchError, match="does not exist"):
        load_split(tmp_path / "nope.csv", image_folder)


def test_resolve_split_loads_or_makes(saved):
    root, split, csv_path = saved
    assert resolve_split(root, csv_path).manifest_sha256 == split.manifest_sha256
    assert resolve_split(root, csv_path, seed=9).manifest_sha256 == split.manifest_sha256
    assert resolve_split(root, None, seed=1).manifest_sha256 == split.manifest_sha256
    assert resolve_split(root, None, seed=2).manifest_sha256 != split.manifest_sha256
