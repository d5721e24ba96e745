"""Adding a person to a face model in seconds, without retraining it (``image-classifier add``).

A ``face_embedding`` model answers from a face's 128-D descriptor: a linear head on a *bank* of
training faces, a ``max_distance`` to that bank beyond which no face decides, and a "none of these"
rule on the distance. Everything slow (the network, the faces of the original photos) is kept; what
a new person changes is refitted on the stored descriptors plus the new person's:

1. **Their photos.** Each photo's faces are found (cached by content); photos without a face, or
   that cannot be read, are listed and left out; at least :data:`MIN_PHOTOS` with a face are needed.
   A seeded share (:data:`VALIDATION_SHARE`, at least one photo) is kept aside for validation; the
   rest are learned from, each photo's face of the person chosen as training chooses it (the face
   nearest to the person's single-face photos).
2. **The head** is refitted, a logistic regression with the original model's L2 strength, on the
   bank (whose rows' people the card records) plus the new faces, each person's faces weighing the
   same in total; ``max_distance`` stays as chosen on the original validation split.
3. **The rule.** The validation photos are answered by that head, and how many are named right is
   reported. A face nearest to the new person's few training faces is further from them than a
   trained person's face is from their many, so the rule judges such a face (score kind
   ``added_face_distance``) against references of its own: the new person's validation distances
   and distances simulated on the trained people, each seen through as many of their training
   faces (:func:`simulated_distances`). Those references are pooled over the trained people, and a
   new person whose photos vary more than the average trained person's (ages, lighting, news photos
   of twenty years) would be turned away on most of them; so a face this close to the new person is
   also accepted within the distance at which simulated strangers would be taken for them at most
   :data:`ADDED_STRANGER_SHARE` of the time (:func:`simulated_stranger_bound`): the bound a stranger
   sets, as face_recognition's fixed tolerance is, but measured. The original validation distances are kept as fitted
   (adding faces to the bank can only bring an original photo closer to it). The known faces seen
   as strangers gain every photo of the new person against the original bank (exactly what they
   were to it). Once checked, the validation photos' faces join the bank and the head is
   refitted once more: the model kept learns from every photo given, and its rule's references
   were measured before.
4. **The whole-image fallback** (for photos without a face) has one output per original class and
   cannot learn the new person from faces: it gets an output for them that is never chosen
   (weight 0, bias :data:`FALLBACK_NEW_CLASS_LOGIT`). A photo of the new person without a face is
   answered as one of the original people, or ``unknown``; the card and ``add`` say so.

The calibration temperatures stay the original model's (the head is refitted with the same
regularisation on nearly the same faces). The card records what was added (``added``).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from PIL import Image

from image_classifier.card import ModelCard
from image_classifier.errors import DatasetError, ModelFormatError, OptionError
from image_classifier.faces import FaceAnalysis, FaceCache, analyse_image
from image_classifier.fileio import sha256_file
from image_classifier.inference.rejection import (
    ADDED_FACE_DISTANCE, FACE_DISTANCE, P_VALUE, UNKNOWN, RejectionRule,
)
from image_classifier.models.face_embedding import FaceHead, choose_face, nearest_distances
from image_classifier.training.face_head import SAME_PERSON, labelled_faces, stranger_distances
from image_classifier.training.folds import fit_linear_head

log = logging.getLogger(__name__)

#: Photos with a face needed to add a person: at least two to learn from and one to check on.
MIN_PHOTOS = 3
#: The share of the new person's photos kept aside to set the threshold on (at least one).
VALIDATION_SHARE = 0.2
#: The fallback network's logit for the new person: exp(-1e4) is 0 in float32, so the whole-image
#: network never answers with them (it never saw them) and its other probabilities are unchanged.
FALLBACK_NEW_CLASS_LOGIT = -1.0e4
#: Draws of a sparse bank per trained person in :func:`simulated_distances`.
SIMULATION_DRAWS = 3
#: The share of strangers' faces a person added from a few photos may be taken for, simulated
#: (:func:`simulated_stranger_bound`). Measured on lfw_people12, each person added back from 5 photos
#: to a model of the other 11 (bench/add_person.py heldout): the worst person's other photos named
#: rose from 59.5 % (3 of 12 people under 90 %) to 95.7 % (all 12 at 95.7-100 %), and 0 to 2 of the 150
#: strangers of unknown_people were taken for the new person; 0.5 % (tried first) left one at 89.2 %.
ADDED_STRANGER_SHARE = 0.01
#: Stranger faces drawn for :func:`simulated_stranger_bound` at most (a bank of thousands of faces stays seconds).
STRANGER_QUERIES = 2000
#: A new person most of whose faces lie this close to one known person's (closer than dlib's
#: same-person 0.6, which two different people in news photos often are) is flagged: maybe the
#: same person under a second name.
LOOKS_LIKE_DISTANCE = 0.45
#: Card keys that describe files the new directory does not have (the original's ONNX exports).
STALE_CARD_KEYS = ("exports",)


@dataclass
class AddedPerson:
    """What :func:`add_person` made: the new model's ``card`` and weights (``state``), and a report."""

    name: str
    card: ModelCard
    state: dict[str, torch.Tensor]
    train: list[str]  # the photos learned from
    validation: list[str]  # the photos the threshold was checked on
    validation_recognised: int  # of those, how many the new model names the new person
    without_face: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)  # same content as another photo given
    looks_like: dict[str, int] = field(default_factory=dict)  # known person -> faces learned very close to theirs
    bank: tuple[int, int] = (0, 0)  # faces in the bank before, after
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        """The card's ``added`` entry for this person."""
        return {"name": self.name, "train": self.train, "validation": self.validation,
                "validation_recognised": self.validation_recognised, "without_face": self.without_face,
                "unreadable": self.unreadable, "duplicates": self.duplicates, "looks_like": self.looks_like,
                "bank_faces": {"before": self.bank[0], "after": self.bank[1]}, "seconds": round(self.seconds, 3)}


def check_name(name: str, classes: Sequence[str]) -> str:
    """The new class's name, checked: not empty, not a known class, not "unknown", usable as a folder."""
    name = str(name).strip()
    if not name:
        raise OptionError("the new person needs a name (--name NAME)")
    if name in classes:
        raise OptionError(f"{name!r} is already one of the model's classes ({', '.join(classes)}): give another --name")
    if name == UNKNOWN:
        raise OptionError(f"{UNKNOWN!r} is the answer for none of the classes: give the person another --name")
    if "/" in name or name in (".", "..") or "\x00" in name:
        raise OptionError(f"--name {name!r}: a class name is also a folder name (sort --copy); leave out '/'")
    return name


def not_a_face_model(card: ModelCard) -> OptionError:
    arch = card.architecture
    if arch == "ensemble":
        return OptionError("add works on one face model (face_embedding), not an ensemble: add the person to the "
                           "run's models/face_embedding, then serve or sort with that model")
    return OptionError(
        f"add works on face models (face_embedding); this model is {arch}, a whole-image network whose head was "
        "trained on its training photos, which the model does not keep: refitting it on the new person alone would "
        "not be honest. Put the person's photos in a new sub-folder of your data folder and train again: "
        f"`image-classifier train DATA --arch {arch}` (or `image-classifier compare DATA`; for photos of people "
        "`--arch face_embedding` can then add people in seconds)")


def _analyse(sources: Sequence[Any], names: Sequence[str | None], cache: FaceCache
             ) -> tuple[list[tuple[str, str, FaceAnalysis]], dict[str, str]]:
    """(name, content sha256, analysis) of each readable source, and {name: reason} of the others."""
    files = [(i, os.fspath(s)) for i, s in enumerate(sources) if isinstance(s, (str, os.PathLike))]
    found: dict[str, FaceAnalysis] = {}
    failures: dict[str, str] = {}
    shas: dict[int, str] = {}
    for i, path in files:
        try:
            shas[i] = sha256_file(path)
        except OSError as err:
            failures[path] = f"cannot read file: {err.strerror or err}"
    if shas:
        found, failed = cache.analyse_files([(files_path, shas[i]) for i, files_path in files if i in shas],
                                            desc="faces")
        failures.update(failed)
    out = []
    for i, source in enumerate(sources):
        name = names[i] or f"image {i}"
        if isinstance(source, Image.Image):
            rgb = source if source.mode == "RGB" else source.convert("RGB")
            out.append((name, hashlib.sha256(rgb.tobytes()).hexdigest(), analyse_image(rgb)))
        elif i in shas and shas[i] in found:
            out.append((name, shas[i], found[shas[i]]))
        elif not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"add takes paths, a folder, PIL images or numpy arrays, not {type(source).__name__}")
    return out, {str(k): v for k, v in failures.items()}


def add_person(card: ModelCard, net: torch.nn.Module, name: str, sources: Sequence[Any],
               names: Sequence[str | None], cache: FaceCache, *, seed: int = 0) -> AddedPerson:
    """The face model of ``card`` and ``net`` with ``name`` added from ``sources`` (paths or PIL
    images, ``names`` for each: what the report and card call them). See the module docstring."""
    t0 = time.perf_counter()
    if card.faces is None:
        raise not_a_face_model(card)
    classes = list(card.classes)
    name = check_name(name, classes)
    bank_labels = card.face_bank_labels
    if bank_labels is None:
        raise ModelFormatError(
            "this face model was saved before `add` existed: its card does not record whose face each training "
            "face is, which refitting the head needs. Train it again (`image-classifier train DATA --arch "
            "face_embedding`, a few minutes), then add the person to the new model")
    head = FaceHead.from_module(net)
    if len(bank_labels) != len(head.bank):
        raise ModelFormatError(f"the card lists {len(bank_labels)} training faces, the weights hold {len(head.bank)}")

    analysed, unreadable = _analyse(sources, names, cache)
    seen: dict[str, str] = {}
    duplicates, without_face, usable = [], [], []
    for photo, sha, analysis in analysed:
        if sha in seen:
            duplicates.append(photo)
        elif analysis.descriptors is None or len(analysis.faces) == 0:
            seen[sha] = photo
            without_face.append(photo)
        else:
            seen[sha] = photo
            usable.append((photo, sha, analysis))
    if len(usable) < MIN_PHOTOS:
        raise DatasetError(
            f"adding {name!r} needs at least {MIN_PHOTOS} photos of them with a face (at least two to learn from and "
            f"one to set the threshold on); of the {len(sources)} given, {len(analysed)} could be read, "
            f"{len(usable)} show a face" + (f" ({len(duplicates)} repeat another)" if duplicates else "")
            + ". Add more photos where the face is visible")
    # A seeded split, the same whatever order the photos were given in.
    usable.sort(key=lambda u: u[1])
    order = np.random.default_rng(seed).permutation(len(usable))
    n_val = max(1, int(round(VALIDATION_SHARE * len(usable))))
    val = [usable[i] for i in sorted(order[:n_val])]
    train = [usable[i] for i in sorted(order[n_val:])]

    old_labels = np.asarray(bank_labels, dtype=np.int64)
    c_param = card.face_head_c
    learned = _their_faces(train)
    if len(learned) < 2:
        raise DatasetError(f"adding {name!r}: in the {len(train)} photos to learn from, only {len(learned)} show the "
                           "same face twice; give more photos where the person is alone or clearly the main face")
    # Most new faces very close to one known person's: maybe the same person under a second name.
    near: dict[str, int] = {}
    for face in np.stack([d for _, d in learned]).astype(np.float64):
        dist = np.linalg.norm(head.bank - face, axis=1)
        if dist.min() <= LOOKS_LIKE_DISTANCE:
            who = classes[int(old_labels[int(dist.argmin())])]
            near[who] = near.get(who, 0) + 1
    looks_like = {who: n for who, n in near.items() if 2 * n >= len(learned)}

    # ---- validation: the head refitted on the training photos' faces; the photos kept aside are
    # answered by it (and are, to the original bank, the strangers they were)
    added_before = {classes.index(a["name"]) for a in card.added or [] if a.get("name") in classes}
    original = [c for c in range(len(classes)) if c not in added_before]
    checked, checked_labels = _refit(head, old_labels, learned, len(classes), c_param)
    val_scores = [_kind_and_distance(checked, checked_labels, a, added_before | {len(classes)}) for _, _, a in val]
    # The new person is in no row of the original bank: each photo measured as training measured the others.
    as_strangers = stranger_distances([a for _, _, a in train + val], np.full(len(train + val), len(classes)),
                                      head.bank, old_labels, head.max_distance).tolist()
    old = RejectionRule.from_card(card.rejection)
    rule = None
    if old is not None:
        sims = simulated_distances(checked.bank, checked_labels, original, len(learned), seed)
        bound = simulated_stranger_bound(checked.bank, checked_labels, original, len(learned), seed)
        rule = _with_validation(old, val_scores, sims, bound)
    recognised = sum(_recognised(checked, rule, checked_labels, added_before | {len(classes)}, a, len(classes))
                     for _, _, a in val)
    # ---- the model kept: once checked, the validation photos' faces join the bank too (their
    # distances above were measured before, so the rule's references stay honest).
    learned = _their_faces(train + val)
    new_head, labels = _refit(head, old_labels, learned, len(classes), c_param)
    if old is not None:
        rule = _with_validation(old, val_scores, simulated_distances(new_head.bank, labels, original, len(learned), seed),
                                simulated_stranger_bound(new_head.bank, labels, original, len(learned), seed))

    new_card = card.with_()
    for stale in STALE_CARD_KEYS:
        new_card.remove(stale)
    new_card.classes = [*classes, name]
    new_card.arch_options = {**(card.arch_options or {}), "face_bank_size": int(len(new_head.bank))}
    new_card.faces = card.faces_with_added(
        len(new_head.bank), [int(v) for v in labels],
        f"by add, on the bank plus {len(learned)} faces of {name!r}, C={c_param:g}, "
        "each person's faces weighing the same in total", as_strangers)
    if rule is not None:
        new_card.rejection = {
            **rule.to_card(),
            "simulated": {ADDED_FACE_DISTANCE: "a face nearest to an added person's: each trained person seen "
                                               "through as many of their training faces as the added person has, "
                                               "their other training faces measured against them; accepted within "
                                               "the distance at which simulated strangers (each other trained "
                                               f"person left out of the bank) are taken for them {ADDED_STRANGER_SHARE:.1%} "
                                               "of the time"}}
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for key, value in zip(FaceHead._NAMES, (new_head.weight, new_head.bias, new_head.mean, new_head.scale,
                                            new_head.bank, new_head.max_distance)):
        state[key] = torch.as_tensor(np.asarray(value), dtype=torch.float32)
    _extend_fallback(net, state)
    added = AddedPerson(name, new_card, state, [p for p, _, _ in train], [p for p, _, _ in val], recognised,
                        without_face, unreadable, duplicates, looks_like, (len(head.bank), len(new_head.bank)))
    added.seconds = time.perf_counter() - t0
    entry = {**added.record(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "from": {"weights_sha256": card.weights_sha256, "classes": classes},
             "calibration": "the original model's temperatures, kept",
             "fallback": (f"the whole-image network (photos without a face) knows only {', '.join(classes)}: it never "
                          f"answers {name!r} (logit {FALLBACK_NEW_CLASS_LOGIT:g}); such a photo is answered as one of "
                          "them, or unknown")}
    new_card.added = [*(card.added or []), entry]
    log.debug("added %s: %d faces learned, %d of %d validation photos recognised, in %.2f s", name, len(learned),
             recognised, len(val), added.seconds)
    return added


def _their_faces(photos: Sequence[tuple[str, str, FaceAnalysis]]) -> list[tuple[str, np.ndarray]]:
    """(photo, descriptor) of the person's face in each photo, chosen as training chooses the
    labelled person's face (the face nearest to their single-face photos); photos where no face is
    theirs are left out."""
    chosen = labelled_faces([a for _, _, a in photos], np.zeros(len(photos), dtype=np.int64))
    return [(photo, a.descriptors[c]) for (photo, _, a), c in zip(photos, chosen) if c is not None]


def _refit(head: FaceHead, labels: np.ndarray, learned: list[tuple[str, np.ndarray]], new_class: int,
           c_param: float) -> tuple[FaceHead, np.ndarray]:
    """The head refitted on its bank plus the new person's faces, with the original L2 strength,
    and the class of each face of its bank.
    Each person's faces weigh as much in total (a few photos of the new person against a hundred of
    each known one would otherwise leave their faces named after a look-alike: measured on
    lfw_people12 added to the athletes' model, 5 photos each, weighting raised the worst person's
    other photos named from 62 % to 84 % (86 % with the validation photos in the bank too) and changed
    no athlete's answer)."""
    faces = np.stack([d for _, d in learned]).astype(np.float64)
    bank = np.vstack([head.bank, faces])
    y = np.concatenate([labels, np.full(len(faces), new_class, dtype=np.int64)])
    counts = np.bincount(y)
    weights = len(y) / (np.count_nonzero(counts) * counts[y])
    mean, scale = bank.mean(0), bank.std(0) + 1e-6
    weight, bias = fit_linear_head(bank, y, new_class + 1, c_param, mean, scale, sample_weight=weights)
    return FaceHead(weight, bias, mean, scale, bank, head.max_distance), y


def simulated_distances(bank: np.ndarray, labels: np.ndarray, people: Sequence[int], k: int, seed: int
                        ) -> np.ndarray:
    """What a genuine photo of a person known from only ``k`` faces scores, simulated on the people
    the model was trained on: each of ``people`` with more than ``k`` training faces is seen
    through ``k`` of them (:data:`SIMULATION_DRAWS` seeded draws), and each of their other training
    faces is measured against that sparse bank (plus everyone else's faces). Sorted, rounded as a
    served distance is. These are ``added_face_distance``'s references: a person added from five
    photos is further from their own few faces than a person trained on fifty is from theirs, and
    judged against the validation distances of the latter, most of their photos would be turned
    away (measured on lfw_people12, a person added back to a model of the other 11 from 5 photos:
    62 % of Arnold Schwarzenegger's other photos named against validation distances, 84 % against
    these; no stranger of unknown_people more accepted)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in people:
        own = np.flatnonzero(labels == c)
        if len(own) <= k:
            continue
        for _ in range(SIMULATION_DRAWS):
            kept = rng.choice(own, k, replace=False)
            queries = np.setdiff1d(own, kept)
            others = np.concatenate([np.flatnonzero(labels != c), kept])
            out.append(nearest_distances(bank[queries], bank[others]))
    return np.sort(np.round(np.concatenate(out), 4)) if out else np.empty(0)


def _kind_and_distance(head: FaceHead, labels: np.ndarray, analysis: FaceAnalysis, added: set[int]
                       ) -> tuple[str, float]:
    """A photo's rejection score as a loaded model computes it: the deciding (else the closest) face's
    distance to the bank, of kind ``added_face_distance`` when its nearest training face is an added person's."""
    face, distance = choose_face(analysis.descriptors, head.bank, head.max_distance)
    if face is None:
        face = int(nearest_distances(np.asarray(analysis.descriptors, np.float64), head.bank).argmin())
    d = np.linalg.norm(head.bank - np.asarray(analysis.descriptors[face], np.float64), axis=1)
    kind = ADDED_FACE_DISTANCE if int(labels[int(d.argmin())]) in added else FACE_DISTANCE
    return kind, round(float(distance), 4)


def simulated_stranger_bound(bank: np.ndarray, labels: np.ndarray, people: Sequence[int], k: int, seed: int
                             ) -> float:
    """The distance within which a face of someone the model does not know is taken for a person known
    from ``k`` faces at most :data:`ADDED_STRANGER_SHARE` of the time, simulated on the trained people:
    each of ``people`` with more than ``k`` faces is seen through ``k`` of them (:data:`SIMULATION_DRAWS`
    seeded draws) and every other trained person in turn plays the stranger (their own faces left out
    of the bank); a stranger's face counts against the bound when its nearest face is one of the ``k``
    (else the rule of another person judges it). Never beyond dlib's same-person distance (a model of
    a few people very unlike each other simulates few strangers near anyone); ``-inf`` when too few
    strangers were simulated."""
    rng = np.random.default_rng([seed, 1])
    queries = np.flatnonzero(np.isin(labels, people))
    if len(queries) > STRANGER_QUERIES:
        queries = np.sort(rng.choice(queries, STRANGER_QUERIES, replace=False))
    q = bank[queries]
    d2 = (q ** 2).sum(1)[:, None] - 2 * q @ bank.T + (bank ** 2).sum(1)[None, :]
    distances = np.sqrt(np.clip(d2, 0, None))
    owners = np.unique(labels)
    # Each query's distance to every person's nearest face, its own person left out (the stranger is unknown).
    per_person = np.stack([distances[:, labels == o].min(1) for o in owners], axis=1)
    per_person[np.arange(len(queries)), np.searchsorted(owners, labels[queries])] = np.inf
    order = np.argsort(per_person, axis=1)
    first = owners[order[:, 0]]
    nearest, second = np.take_along_axis(per_person, order[:, :2], axis=1).T if len(owners) > 1 else (
        per_person[:, 0], np.full(len(queries), np.inf))
    taken: list[np.ndarray] = []
    total = 0
    for c in people:
        own = np.flatnonzero(labels == c)
        if len(own) <= k:
            continue
        strangers = labels[queries] != c
        # The nearest face of the rest of the bank: without c's faces, which only the k kept stand for.
        rest = np.where(first == c, second, nearest)[strangers]
        for _ in range(SIMULATION_DRAWS):
            kept = rng.choice(own, k, replace=False)
            to_kept = distances[np.ix_(strangers, kept)].min(1)
            taken.append(to_kept[to_kept < rest])
            total += int(strangers.sum())
    allowed = int(math.floor(ADDED_STRANGER_SHARE * total))
    values = np.sort(np.concatenate(taken)) if taken else np.empty(0)
    if allowed == 0 or len(values) == 0:
        return -math.inf
    return min(round(float(values[min(allowed, len(values)) - 1]), 4), SAME_PERSON)


def _with_validation(old: RejectionRule, val_scores: Sequence[tuple[str, float]], simulated: np.ndarray,
                     bound: float) -> RejectionRule:
    """The original rule's references plus the new person's validation photos (each under its kind)
    and the simulated references of the added people (those of earlier adds kept); added people's
    faces accepted within ``bound`` (the strictest of every add's)."""
    refs = {k: v.copy() for k, v in old.references.items()}
    for kind in {k for k, _ in val_scores} | {ADDED_FACE_DISTANCE}:
        extra = [v for k, v in val_scores if k == kind]
        if kind == ADDED_FACE_DISTANCE:
            extra += list(simulated)
        refs[kind] = np.sort(np.concatenate([refs.get(kind, np.empty(0)), np.asarray(extra, np.float64)]))
    within = dict(old.accept_within)
    if math.isfinite(bound):
        within[ADDED_FACE_DISTANCE] = min(bound, within.get(ADDED_FACE_DISTANCE, math.inf))
    return RejectionRule(old.keep, P_VALUE, refs, 1.0 - old.keep, within, old.fitted_on)


def _recognised(head: FaceHead, rule: RejectionRule | None, labels: np.ndarray, added: set[int],
                analysis: FaceAnalysis, index: int) -> bool:
    """Whether a validation photo of the new person (class ``index``) is answered with their name by
    the face path (a face decides, the head names them, the rule accepts its distance)."""
    face, _ = choose_face(analysis.descriptors, head.bank, head.max_distance)
    if face is None or int(head.logits(analysis.descriptors[face][None]).argmax()) != index:
        return False
    return rule is None or rule.decide(*zip(*[_kind_and_distance(head, labels, analysis, added)]))[0].accepted


def _extend_fallback(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """One more output for the fallback's last linear layer, never the answer (see the module docstring)."""
    modules = list(net.head.named_modules())  # type: ignore[union-attr]
    last = next((key for key, module in reversed(modules) if isinstance(module, torch.nn.Linear)), None)
    if last is None:
        raise ModelFormatError("the face model's fallback network has no linear output layer to extend")
    weight, bias = state[f"head.{last}.weight"], state[f"head.{last}.bias"]
    state[f"head.{last}.weight"] = torch.cat([weight, torch.zeros(1, weight.shape[1], dtype=weight.dtype)])
    state[f"head.{last}.bias"] = torch.cat([bias, torch.full((1,), FALLBACK_NEW_CLASS_LOGIT, dtype=bias.dtype)])
