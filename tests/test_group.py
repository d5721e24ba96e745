"""``image-classifier group`` and the clustering under it: real faces (LFW news photos of
lfw_people12) grouped with the names hidden, the output folder, growing it, --merge / --split,
--model, the contact sheet in Chromium; and the clustering's own rules on small descriptor sets."""
from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import copy_people
from image_classifier.cli import main
from image_classifier.errors import OptionError
from image_classifier.faces.clustering import (ATTACH_DISTANCE, CORE_DISTANCE, MIN_GROUP_SIZE, SINGLE, bcubed,
                                               chinese_whispers, cluster_faces, main_faces, split_group)
from image_classifier.people import group_photos
from image_classifier.people.state import MARKER_NAME, STATE_NAME

PEOPLE = ("Hans_Blix", "Jennifer_Capriati", "Laura_Bush", "Junichiro_Koizumi")
FIRST = range(0, 6)
MORE = range(6, 9)
NEWCOMER = "Vladimir_Putin"


# -- the clustering's rules, on descriptors made here (fast) ---------------------------------------

def blobs(sizes: list[int], spread: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """People as tight blobs 1.0 apart: faces of one person ~0.2 apart, of two people ~1.0."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0 / np.sqrt(2 * 128), (len(sizes), 128))
    who = np.repeat(np.arange(len(sizes)), sizes)
    return centres[who] + rng.normal(0, spread / np.sqrt(2 * 128), (len(who), 128)), who


def test_group_s_options_are_declared_once_and_default_to_the_clustering_s(tmp_path):
    from image_classifier.cli import build_parser
    from image_classifier.faces.clustering import ClusterParams
    from image_classifier.optionspec import from_args
    from image_classifier.people import GroupOptions

    def parsed(*extra: str) -> GroupOptions:
        return from_args(GroupOptions, build_parser().parse_args(["group", "photos", "--out", "out", *extra]))

    assert parsed() == GroupOptions() and GroupOptions().params() == ClusterParams()
    assert (GroupOptions().min_size, GroupOptions().core_distance, GroupOptions().attach_distance) == (
        MIN_GROUP_SIZE, CORE_DISTANCE, ATTACH_DISTANCE)
    given = parsed("--merge", "person_001", "person_002", "--no-cache", "--min-size", "5", "--copy")
    assert given == GroupOptions(merge=("person_001", "person_002"), cache=False, min_size=5, copy=True)
    # One check, the same from Python and the command line.
    with pytest.raises(OptionError, match="--merge takes two different groups, not a a"):
        GroupOptions(merge=("a", "a")).check()
    assert main(["group", str(tmp_path), "--out", str(tmp_path / "out"), "--merge", "a", "a"]) == 2
    assert not (tmp_path / "out").exists()
    with pytest.raises(TypeError, match="unknown group option.*min_sise.*min_size"):
        group_photos(tmp_path, tmp_path / "out", min_sise=3)


def test_bcubed_on_a_worked_example():
    # Clusters {a1, a2, b1} and {b2}; truth a = {a1, a2}, b = {b1, b2}.
    # Precision: a1, a2: 2/3 each; b1: 1/3; b2: 1 -> (2/3 + 2/3 + 1/3 + 1) / 4 = 2/3.
    # Recall: a1, a2: 1 each; b1, b2: 1/2 each -> 3/4.
    p, r = bcubed([0, 0, 0, SINGLE], ["a", "a", "b", "b"])
    assert (round(p, 6), round(r, 6)) == (round(2 / 3, 6), 0.75)


def test_blobs_become_groups_and_stragglers_singles():
    x, who = blobs([5, 4, 3, 2])
    result = cluster_faces(x)
    p, r = bcubed(result.labels, who)
    assert p == 1.0
    assert (result.labels[who == 3] == SINGLE).all()  # 2 faces: under the minimum group size
    assert len(result.groups) == 3


def test_two_faces_of_one_photo_are_never_grouped_together():
    x, who = blobs([6, 6])
    photos = [f"p{k}" for k in range(len(x))]
    photos[1] = photos[0]  # two faces of person 0 in one photo (a mirror, a poster)
    photos[7] = photos[6]
    result = cluster_faces(x, photos)
    # One face of the shared photo joins its person's group (with the four other faces), the other is single.
    for first, second in ((0, 1), (6, 7)):
        group = result.labels[first + 2]
        assert group != SINGLE and {result.labels[first], result.labels[second]} == {SINGLE, group}
    # Without the photos, the same faces are one person's.
    assert cluster_faces(x).labels[0] == cluster_faces(x).labels[1] != SINGLE


def test_chinese_whispers_respects_the_photo_rule_and_fixed_seeds():
    # A path 0-1-2; 0 and 2 are in one photo, so they never share a label.
    labels = chinese_whispers(3, np.array([0, 1]), np.array([1, 2]), photos=["a", "b", "a"])
    assert labels[0] != labels[2]
    seeds = np.array([7, -1, -1])
    labels = chinese_whispers(3, np.array([0, 1]), np.array([1, 2]), seeds=seeds)
    assert labels[0] == 7 and labels[1] == 7 and labels[2] == 7


def test_seeded_groups_keep_their_faces_and_number_and_new_people_get_new_groups():
    x, who = blobs([5, 5, 5])
    seeds = np.where(who == 0, 4, SINGLE)  # person 0 is group 4 from an earlier run
    seeds[who == 1] = 9
    seeds[who == 2] = SINGLE
    result = cluster_faces(x, seeds=seeds)
    assert (result.labels[who == 0] == 4).all() and (result.labels[who == 1] == 9).all()
    new = set(result.labels[who == 2].tolist())
    assert len(new) == 1 and new.pop() > 9


def test_a_run_again_with_nothing_new_gives_the_same_groups():
    x, who = blobs([6, 5, 4, 2, 1], spread=0.45, seed=3)
    first = cluster_faces(x)
    again = cluster_faces(x, seeds=first.labels, seeds_attached=first.attached)
    assert (again.labels == first.labels).all()


def test_weighted_votes_follow_the_closer_neighbours():
    # Node 0 has three neighbours in group 5, each 0.49 away, and two in group 9, each 0.1 away.
    i, j = np.zeros(5, dtype=np.int64), np.arange(1, 6)
    seeds = np.array([SINGLE, 5, 5, 5, 9, 9])
    assert chinese_whispers(6, i, j, seeds=seeds)[0] == 5  # counted edges: three against two
    distance = np.array([0.49, 0.49, 0.49, 0.1, 0.1])
    assert chinese_whispers(6, i, j, weights=1 - distance, seeds=seeds)[0] == 9  # 3 x 0.51 < 2 x 0.9


def test_main_faces_are_the_largest_of_each_photo():
    photos = ["a", "a", "b", "c", "c", "c"]
    areas = [50.0, 80.0, 10.0, 30.0, 30.0, 5.0]
    assert main_faces(photos, areas).tolist() == [False, True, True, True, False, False]  # ties: the first


def junk_scene() -> tuple[np.ndarray, list[str], list[float]]:
    """A person's 8 clear faces (0.21 apart), 2 poor main faces of theirs (0.53 from their centre,
    0.55 from each clear face: no edge) and 3 small background faces in the person's photos that
    lie near the poor faces (0.27) and 0.77 from the person: the shape of the athletes' junk group."""
    e = np.eye(128)
    clear = [0.15 * e[10 + k] for k in range(8)]
    poor = [0.52 * e[0] + 0.1 * e[30 + k] for k in range(2)]
    background = [0.75 * e[0] + 0.1 * e[40 + k] for k in range(3)]
    photos = [f"clear{k}" for k in range(8)] + ["poor0", "poor1"] + ["clear0", "clear1", "clear2"]
    return np.stack(clear + poor + background), photos, [100.0] * 10 + [10.0] * 3


def test_background_faces_never_take_a_photos_main_face():
    x, photos, areas = junk_scene()
    together = cluster_faces(x, photos)  # one round: the poor faces found a group with the background
    assert together.labels[8] == together.labels[10] != together.labels[0]
    result = cluster_faces(x, photos, first=main_faces(photos, areas))
    person = result.labels[0]
    assert person != SINGLE and (result.labels[:10] == person).all()  # the poor faces attach to their person
    assert result.attached[8] and result.attached[9]
    # The background faces, a person of their own, still make a group: they just come second.
    background = set(result.labels[10:].tolist())
    assert len(background) == 1 and background.pop() not in (SINGLE, person)


def test_two_rounds_run_again_give_the_same_groups_and_number_new_groups_above_every_seed():
    x, photos, areas = junk_scene()
    first = main_faces(photos, areas)
    once = cluster_faces(x, photos, first=first)
    again = cluster_faces(x, photos, first=first, seeds=once.labels, seeds_attached=once.attached)
    assert (again.labels == once.labels).all() and (again.attached == once.attached).all()
    # A group held only by background faces (number 7) is a seed too: a new person's group gets 8.
    y, who = blobs([4], seed=5)
    seeds = np.r_[np.where(once.labels == once.labels[10], 7, once.labels), np.full(4, SINGLE)]
    grown = cluster_faces(np.r_[x, y], photos + [f"new{k}" for k in range(4)], first=np.r_[first, [True] * 4],
                          seeds=seeds, seeds_attached=np.r_[once.attached, [False] * 4])
    assert (grown.labels[10:13] == 7).all() and set(grown.labels[13:].tolist()) == {8}


def test_split_separates_two_people_merged_in_one_group():
    x, who = blobs([6, 6], seed=1)
    x[who == 1] = x[who == 1] - x[who == 1].mean(0) + x[who == 0].mean(0) + 0.45 / np.sqrt(128)
    assert len(cluster_faces(x).groups) == 1  # close enough to be grouped as one
    parts, core = split_group(x)
    assert core is not None and core < CORE_DISTANCE
    assert bcubed(parts, who)[0] == 1.0 and len(set(parts.tolist()) - {SINGLE}) == 2


def test_options_are_checked_before_any_photo_is_read(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(OptionError, match="minimum group size"):
        group_photos(tmp_path / "photos", tmp_path / "out", min_size=0)
    with pytest.raises(OptionError, match="is the folder being grouped"):
        group_photos(tmp_path / "photos", tmp_path / "photos")
    with pytest.raises(OptionError, match="holds the folder being grouped"):
        group_photos(tmp_path / "photos", tmp_path)


# -- real faces ------------------------------------------------------------------------------------

def read_groups(out: Path) -> list[dict[str, str]]:
    with open(out / "groups.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def score(rows: list[dict[str, str]], truth: dict[str, str]) -> tuple[float, float]:
    """BCubed precision and recall of the largest face of each photo that has one, computed here:
    per face, the share of its group that is its person, and the share of its person in its group
    (a face in singles/ is a group of its own)."""
    items = [(r["photo"], r["group"] if r["group"] != "singles" else f"single:{r['photo']}")
             for r in rows if r["face"] == "0"]
    precision = recall = 0.0
    for photo, group in items:
        same_group = [p for p, g in items if g == group]
        same_person = [p for p, _ in items if truth[p] == truth[photo]]
        both = [p for p in same_group if truth[p] == truth[photo]]
        precision += len(both) / len(same_group)
        recall += len(both) / len(same_person)
    return precision / len(items), recall / len(items)


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def face_cache(tmp_path_factory) -> Path:
    """One face cache for the module: each sample photo is analysed once."""
    return tmp_path_factory.mktemp("face-cache")


@pytest.fixture
def sample(lfw_people12_dir, tmp_path) -> tuple[Path, dict[str, str]]:
    """Six photos of each of four people in one flat folder, names hidden (file names are LFW's
    and name the person, but group never reads names)."""
    data = tmp_path / "photos"
    truth = copy_people(lfw_people12_dir, data, {p: FIRST for p in PEOPLE}, flat=True)
    renamed = {}
    for k, (rel, person) in enumerate(sorted(truth.items())):  # hide the names from the file names too
        (data / rel).rename(data / f"photo_{k:03d}.jpg")
        renamed[f"photo_{k:03d}.jpg"] = person
    return data, renamed


@pytest.mark.slow
def test_group_recovers_the_people_and_never_touches_the_originals(sample, tmp_path, face_cache):
    data, truth = sample
    before = digest(data)
    out = tmp_path / "out"
    result = group_photos(data, out, cache_dir=face_cache)
    rows = read_groups(out)
    precision, recall = score(rows, truth)
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)
    assert digest(data) == before
    # Every photo is filed once: in a person folder, singles/ or no_face/, as a link to the original.
    filed = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    links = [f for d in filed for f in d.iterdir() if f.name != MARKER_NAME]
    assert sorted(f.name for f in links) == sorted(truth)
    assert all(f.is_symlink() and f.resolve().parent == data.resolve() for f in links)
    assert {g.name for g in result.groups} == {p.name for p in filed} - {"singles", "no_face"}
    assert (out / "index.html").is_file() and (out / STATE_NAME).is_file()
    # Every face has a thumbnail and a distance to its group's centre.
    assert all(r["distance"] for r in rows if r["group"] != "singles")


@pytest.mark.slow
def test_two_faces_in_one_photo_never_share_a_group(lfw_people12_dir, tmp_path, face_cache):
    data = tmp_path / "photos"
    copy_people(lfw_people12_dir, data, {"Hans_Blix": range(0, 6)}, flat=True)
    files = sorted(data.iterdir())
    # One photo showing Hans Blix twice (two of his photos side by side): the same person, yet
    # two faces of one photo are two people.
    pair = Image.new("RGB", (500, 250))
    pair.paste(Image.open(files[0]).convert("RGB"), (0, 0))
    pair.paste(Image.open(files[1]).convert("RGB"), (250, 0))
    pair.save(data / "twice.jpg", quality=92)
    group_photos(data, tmp_path / "out", cache_dir=face_cache)
    faces = [r for r in read_groups(tmp_path / "out") if r["photo"] == "twice.jpg"]
    assert len(faces) == 2, "both faces of the side-by-side photo must be found for this test to mean anything"
    groups = [r["group"] for r in faces]
    assert groups[0] != groups[1] and groups.count("singles") <= 1  # one of them is his, in his group


def partition(rows: list[dict[str, str]], face: str = "0") -> set[frozenset[str]]:
    """The photos whose face ``face`` shares a group, as a set of sets (a single is a set of one)."""
    groups: dict[str, set[str]] = {}
    for r in rows:
        if r["face"] == face:
            groups.setdefault(r["group"] if r["group"] != "singles" else f"single:{r['photo']}", set()).add(r["photo"])
    return {frozenset(g) for g in groups.values()}


@pytest.mark.slow
def test_faces_in_the_background_never_move_a_main_face(sample, lfw_people12_dir, tmp_path, face_cache):
    data, truth = sample
    # Each photo, enlarged, alone on a canvas; and the same with someone else beside the person,
    # smaller (a team-mate, a fan): two people, each beside 12 of the 24 photos.
    behind = copy_people(lfw_people12_dir, tmp_path / "others", {"Jacques_Chirac": range(12),
                                                                 "Lleyton_Hewitt": range(12)})
    alone, scenes = tmp_path / "alone", tmp_path / "scenes"
    alone.mkdir()
    scenes.mkdir()
    who_beside = {}
    for name, other in zip(sorted(truth), sorted(behind)):
        canvas = Image.new("RGB", (530, 330), (128, 128, 128))
        canvas.paste(Image.open(data / name).convert("RGB").resize((330, 330)), (0, 0))
        canvas.save(alone / name, quality=95)
        canvas.paste(Image.open(tmp_path / "others" / other).convert("RGB").resize((200, 200)), (330, 65))
        canvas.save(scenes / name, quality=95)
        who_beside[name] = behind[other]
    group_photos(alone, tmp_path / "plain", cache_dir=face_cache)
    group_photos(scenes, tmp_path / "busy", cache_dir=face_cache)
    plain, busy = read_groups(tmp_path / "plain"), read_groups(tmp_path / "busy")
    beside = [r for r in busy if r["face"] != "" and float(r["x0"]) >= 330]
    assert all(float(r["x0"]) < 330 for r in busy if r["face"] == "0"), "the person must stay the largest face"
    assert len(beside) >= 20, "the faces beside must be found for this test to mean anything"
    # The people's faces are grouped exactly as without anyone beside them.
    assert partition(busy) == partition(plain)
    assert score(busy, truth)[0] >= 0.95
    # Each person beside them, seen in 12 photos, is a group of their own, apart from the people's.
    people_groups = {r["group"] for r in busy if r["face"] == "0"} - {"singles"}
    for person in ("Jacques_Chirac", "Lleyton_Hewitt"):
        groups = Counter(r["group"] for r in beside if who_beside[r["photo"]] == person)
        group, n = groups.most_common(1)[0]
        assert group != "singles" and group not in people_groups and n >= 0.8 * sum(groups.values()), groups


@pytest.mark.slow
def test_a_rerun_after_adding_photos_keeps_renamed_groups_and_makes_new_ones(lfw_people12_dir, tmp_path, face_cache):
    data = tmp_path / "photos"
    copy_people(lfw_people12_dir, data, {p: FIRST for p in PEOPLE})  # in sub-folders: any layout works
    out = tmp_path / "out"
    group_photos(data, out, cache_dir=face_cache)
    rows = read_groups(out)
    hans_group = Counter(r["group"] for r in rows if r["face"] == "0" and r["photo"].startswith("Hans_Blix/"))
    hans = hans_group.most_common(1)[0][0]
    (out / hans).rename(out / "Hans")
    unchanged = read_groups(out)
    # Nothing new: the same groups, the new name.
    group_photos(data, out, cache_dir=face_cache)
    again = read_groups(out)
    assert [(r["photo"], r["face"], r["group"]) for r in again] == [
        (r["photo"], r["face"], "Hans" if r["group"] == hans else r["group"]) for r in unchanged]
    # New photos of the same people and of a newcomer.
    copy_people(lfw_people12_dir, data, {**{p: MORE for p in PEOPLE}, NEWCOMER: range(0, 5)})
    result = group_photos(data, out, cache_dir=face_cache)
    rows = read_groups(out)
    by_photo = {r["photo"]: r["group"] for r in rows if r["face"] == "0"}
    new_hans = [by_photo[p] for p in by_photo if p.startswith("Hans_Blix/")]
    assert Counter(new_hans)["Hans"] >= len(new_hans) - 1, new_hans
    assert (out / "Hans" / MARKER_NAME).is_file() and not (out / hans).exists()
    putin = Counter(by_photo[p] for p in by_photo if p.startswith(f"{NEWCOMER}/"))
    newcomer_group, n = putin.most_common(1)[0]
    assert n >= 4 and newcomer_group not in {r["group"] for r in unchanged}
    assert {g.name: g.note for g in result.groups}[newcomer_group] == "new"
    # The old groups kept their names; each grew.
    old = {r["group"] for r in unchanged} - {"singles"}
    assert {(g.name if g.name != "Hans" else hans) for g in result.groups} >= old
    assert all(g.note.startswith("+") for g in result.groups if g.name in (old - {hans}) | {"Hans"})


@pytest.mark.slow
def test_merge_then_split(sample, tmp_path, face_cache):
    data, truth = sample
    out = tmp_path / "out"
    result = group_photos(data, out, cache_dir=face_cache)
    a, b = result.groups[0].name, result.groups[1].name
    merged = group_photos(data, out, cache_dir=face_cache, merge=(a, b))
    assert b not in {g.name for g in merged.groups} and not (out / b).exists()
    rows = read_groups(out)
    in_a = {r["photo"] for r in rows if r["group"] == a and r["face"] == "0"}
    assert len({truth[p] for p in in_a}) == 2  # two people in one group now
    assert sorted(p.name for p in (out / a).iterdir() if p.name != MARKER_NAME) == sorted(
        r["photo"] for r in rows if r["filed_under"] == a and r["face"] == "0")
    split = group_photos(data, out, cache_dir=face_cache, split=a)
    assert any(e.startswith(f"split {a}") for e in split.events)
    rows = read_groups(out)
    parts = {r["group"] for r in rows if r["photo"] in in_a and r["face"] == "0"}
    assert len(parts) == 2 and a in parts
    for part in parts:  # each part is one person again
        assert len({truth[r["photo"]] for r in rows if r["group"] == part and r["face"] == "0"}) == 1


@pytest.mark.slow
def test_the_cli_prints_json_and_refuses_an_unknown_group(sample, tmp_path, face_cache, capsys, monkeypatch):
    monkeypatch.setenv("IMAGE_CLASSIFIER_CACHE_DIR", str(face_cache))
    data, _ = sample
    out = tmp_path / "out"
    assert main(["group", str(data), "--out", str(out), "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["photos"] == 24 and sum(g["photos"] for g in printed["groups"]) + printed["singles_photos"] \
        + printed["no_face"] == 24
    assert main(["group", str(data), "--out", str(out), "--merge", "nobody", printed["groups"][0]["name"]]) == 2
    assert "no group called 'nobody'" in capsys.readouterr().err


@pytest.mark.slow
def test_model_names_the_groups_it_knows(lfw_people12_dir, tmp_path, face_cache):
    from conftest import SHARED
    from image_classifier.data.split import make_split
    from image_classifier.people.naming import ModelNamer
    from image_classifier.training import train_model

    weights = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
    if not weights.is_file():
        pytest.skip(f"needs {weights}")
    known = PEOPLE[:3]
    labelled = tmp_path / "labelled"
    copy_people(lfw_people12_dir, labelled, {p: range(10, 22) for p in known})
    split = make_split(labelled, seed=0, val=0.25, test=0.25)
    model = train_model(split, "face_embedding", tmp_path / "model", weights=weights,
                        set={"phases.frozen.epochs": "2", "feature_views": "1"}, progress=False)
    data = tmp_path / "photos"
    truth = copy_people(lfw_people12_dir, data, {p: FIRST for p in PEOPLE})  # PEOPLE[3] is unknown to the model
    result = group_photos(data, tmp_path / "out", cache_dir=face_cache, namer=ModelNamer(model.model_dir))
    rows = read_groups(tmp_path / "out")
    for person in known:
        groups = Counter(r["group"] for r in rows if r["face"] == "0" and truth[r["photo"]] == person)
        assert groups.most_common(1)[0][0] == person
    stranger = Counter(r["group"] for r in rows if r["face"] == "0" and truth[r["photo"]] == PEOPLE[3])
    name = stranger.most_common(1)[0][0]
    assert name.startswith("person_") and name not in known
    assert {g.name for g in result.groups} >= set(known)


def test_group_model_refuses_a_model_that_cannot_name_faces_before_any_work(colour_model, sample, tmp_path, capsys):
    data, _ = sample
    out = tmp_path / "out"
    assert main(["group", str(data), "--out", str(out), "--model", str(colour_model), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "cannot name the faces of a group" in err and "face_embedding" in err
    assert not out.exists()


def test_group_model_given_a_run_takes_the_run_s_model_that_answers_from_faces(colour_model, face_model, tmp_path):
    from image_classifier.people.naming import ModelNamer, naming_model_dir

    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    (models / "a_colours").symlink_to(colour_model, target_is_directory=True)
    (models / "b_faces").symlink_to(face_model["model"], target_is_directory=True)
    assert naming_model_dir(tmp_path / "run") == models / "b_faces"
    namer = ModelNamer(tmp_path / "run")
    assert namer.source == str(models / "b_faces")
    (models / "c_faces").symlink_to(face_model["model"], target_is_directory=True)
    with pytest.raises(OptionError, match="2 models that answer from faces"):
        naming_model_dir(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.browser
def test_the_contact_sheet_renders_in_chromium_without_console_errors(sample, tmp_path, face_cache):
    from browser_helpers import chromium_page

    data, _ = sample
    out = tmp_path / "out"
    result = group_photos(data, out, cache_dir=face_cache)
    with chromium_page() as (page, errors):
        page.goto((out / "index.html").as_uri())
        page.wait_for_load_state("load")
        sections = page.locator("section h2").all_inner_texts()
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert errors == []
    assert [g.name for g in result.groups] == [s for s in sections if s not in ("singles", "no_face")]
    assert images and all(done and width > 0 for done, width in images)


def test_photos_without_faces_and_unreadable_files(tmp_path):
    from conftest import make_image_folder

    data = make_image_folder(tmp_path / "photos", {"a": 3})
    (data / "notes.txt").write_text("not a photo")
    out = data / "people"  # OUT inside DIR: never read as photos
    result = group_photos(data, out, cache_dir=tmp_path / "cache")
    assert (result.photos, result.faces, result.groups, result.no_face) == (3, 0, [], 3)
    assert list(result.unreadable) == ["notes.txt"]
    assert sorted(p.name for p in (out / "no_face").iterdir()) == ["a__a_000.jpg", "a__a_001.jpg", "a__a_002.jpg"]
    again = group_photos(data, out, cache_dir=tmp_path / "cache")
    assert again.photos == 3  # the output folder's links were not taken for photos
    rows = read_groups(out)
    assert [r["group"] for r in rows] == ["no_face"] * 3
    assert "notes.txt" in (out / "index.html").read_text()


def test_a_merge_never_puts_two_faces_of_one_photo_in_the_group():
    from image_classifier.people.grouping import _merge

    x, who = blobs([4, 4])
    photos = [f"p{k}" for k in range(8)]
    photos[4] = photos[0]  # the photo of face 0 (group 1) also shows face 4 (group 2)
    labels = np.where(who == 0, 1, 2)
    names = {1: "Ana", 2: "person_002"}
    event = _merge(1, 2, labels, np.zeros(8, dtype=bool), x, photos, names)
    assert names == {1: "Ana"} and "1 faces left out" in event
    assert sorted(labels[[0, 4]].tolist()) == [SINGLE, 1] and (labels[[1, 2, 3, 5, 6, 7]] == 1).all()
