"""The real dataset (../shared/datasets/athletes): the numbers the issue and the dataset README give."""
from __future__ import annotations

import pytest

from image_classifier.data.check import audit_dataset
from image_classifier.data.split import SUBSETS, load_split, make_split

pytestmark = pytest.mark.slow

# Same-photo pairs confirmed by eye (re-encoded, re-cropped, or cut out as a close-up).
SAME_PHOTO_PAIRS = [
    ("Kobe Bryant/kobe_(18).jpg", "Kobe Bryant/kobe_(9).jpg"),
    ("ronaldo/ronaldo2.jpg", "ronaldo/ronaldo_(29).jpg"),
    ("ronaldo/ronaldo_(100).jpg", "ronaldo/ronaldo_(99).jpg"),
    ("ronaldo/cristiano-ronaldo-163047908716x9.jpg", "ronaldo/ronaldo_(85).jpg"),
    ("ronaldo/hAsxOYVLzHIteHwqWYGYJrO0WlC.jpg", "ronaldo/ronaldo_(88).jpg"),
    ("Maria Sharapova/Sharapova_ (36).jpg", "Maria Sharapova/pfS1IqwspA2jQ71z5CLA3AaBPiO.jpg"),
    ("Maria Sharapova/56de436ca8049.jpg", "Maria Sharapova/Sharapova_ (56).jpg"),
]
# Different photos of one studio session (other poses): must stay apart.
DIFFERENT_POSES = ["ronaldo/ronaldo_(86).jpg", "ronaldo/ronaldo_(87).jpg", "ronaldo/ronaldo_(89).jpg",
                   "ronaldo/ronaldo_(90).jpg"]


@pytest.fixture(scope="module")
def audit(athletes_dir):
    return audit_dataset(athletes_dir)


def test_counts(audit):
    assert audit.files == 437 and audit.images == 437
    assert audit.classes == {"Kobe Bryant": 110, "Maria Sharapova": 159, "ronaldo": 168}
    assert audit.unreadable == [] and audit.usable
    assert audit.formats() == {"JPEG": 433, "PNG": 4}
    assert {m["path"] for m in audit.extension_mismatches()} == {
        "ronaldo/cris.jpg", "ronaldo/ronaldo.jpg", "ronaldo/ronaldo2.jpg"}
    assert min(min(r.width, r.height) for r in audit.records) == 172


def test_exact_duplicates_all_in_sharapova(audit):
    assert len(audit.exact_duplicate_groups) == 6
    for group in audit.exact_duplicate_groups:
        assert len(group) == 2 and all(p.startswith("Maria Sharapova/") for p in group)


def test_near_duplicates(audit):
    pairs = {tuple(sorted((p.a, p.b))) for p in audit.near_duplicate_pairs}
    for pair in SAME_PHOTO_PAIRS:
        assert tuple(sorted(pair)) in pairs, pair
    assert len(audit.near_duplicate_pairs) == 8  # the 7 above + two frames of one portrait sitting
    assert all(p.ncc is not None and p.ncc >= 0.8 for p in audit.near_duplicate_pairs)
    assert len(audit.near_duplicate_weakest_links) == len(audit.near_duplicate_groups) == 8
    counts = audit.near_duplicate_candidates
    assert sum(c.accepted for c in counts.values()) == 8
    assert counts["local-features"].rejected > 0  # candidates are proposals, not verdicts
    grouped = {p for g in audit.groups for p in g}
    assert not grouped & set(DIFFERENT_POSES)
    assert audit.label_conflicts == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_group_crosses_the_split(athletes_dir, audit, seed):
    split = make_split(athletes_dir, seed=seed, audit=audit)
    where = {r.rel_path: r.subset for r in split.records}
    for group in audit.groups:
        assert len({where[p] for p in group}) == 1, group
    totals = {s: sum(v.values()) for s, v in split.sizes().items()}
    assert totals == {"train": 305, "val": 66, "test": 66}


def test_manifest_is_deterministic_and_verifies(athletes_dir, audit, tmp_path):
    a = make_split(athletes_dir, seed=0, audit=audit)
    b = make_split(athletes_dir, seed=0, audit=audit)
    assert a.manifest_text() == b.manifest_text()
    a.save(tmp_path / "split.csv")
    loaded = load_split(tmp_path / "split.csv", athletes_dir)
    assert loaded.manifest_sha256 == a.manifest_sha256
    assert set(loaded.sizes()) == set(SUBSETS)
