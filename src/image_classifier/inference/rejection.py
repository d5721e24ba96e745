""""None of these": the open-set rejection rule of a model, fitted on its validation split (a face
model's on its training photos too).

A classifier trained on three people answers one of the three for any photo. The rule turns a
prediction into ``unknown`` when the image looks less like the known classes than almost every
validation image did. Per image there is one **score kind**:

* ``max_probability``: the largest (calibrated) class probability, higher = more like a known class.
  What every CNN uses, and a face model's whole-image fallback where no face is found.
* ``face_distance``: for a face model where a face is found, the descriptor's distance to the
  nearest training face (the model's bank; dlib's same-person distance is about 0.6), lower = more
  like a known person. A stranger's face is far from every training face even when the fallback
  network is sure of its answer, which is why this beats the fallback's probability.
* ``picture_distance``: for a face model where no face is found, the picture's distance to the
  nearest training picture in the fallback's pooled features (the model's picture bank; see
  ``models.face_embedding.picture_distances``), lower = more like the known people's photos. A
  photo of no one (a landscape, a page, a pet) is far from all of them however sure the fallback
  is: on the athletes the fallback named an athlete for each of 18 such pictures, at up to 93 %.
* ``member_p_value``: for an ensemble, the smallest of its members' own conformal p-values for the
  image (each member's rule on that member's scores), higher = more like a known class: the image
  is as strange as its strangest member finds it (a stranger's face is far from the face model's
  bank even when the whole-image CNN is sure). ``details['member_p_value']``.

A rule on the p-value scale scores an image by a conformal p-value: the fraction of the validation
images *of the same kind* that look no more like the known classes than this one. The threshold
``1 - keep`` on that scale rejects at most ``(1 - keep)`` of the validation images of each kind it
was fitted on, so the rule keeps ``keep`` of them by construction; an image of a kind the rule has no
references for gets p = 1 (no evidence to reject it). A model with one kind (the CNNs) thresholds the
raw score instead (the same decisions, a readable number).

A face model's rule is fitted on the references its card records (``training.face_references``):
the face distance of every training and validation photo in which a face was found
(``face_distance``), and the picture distance of every one (``picture_distance``: the photos in
which no face is found are too few for references of their own), each photo measured against the
model without its own rows; a few dozen validation photos alone let one photo move the threshold
(``fitted_on`` says which photos a rule's references are). The fallback's
*probability* never rejects: it tells strangers from known people no better than chance
(leave-one-class-out AUROC 0.2-0.5 for the CNNs on the athletes), so rejecting by it only threw
known photos away. Measured on the athletes (seed 0, the test half of 150 strangers): at the
threshold keeping 95 % of all known test photos, the face model accepted 25 % of the strangers when
its photos without a face could be rejected by it, 1.3 % when not. A stranger's photo without a
face is still answered (it looks like the known people's photos); a photo of no one is not.

The rule lives in the card under ``rejection`` (:meth:`RejectionRule.to_card`): the kinds'
sorted reference scores are stored, so a loaded model recomputes every p-value. Models without
the key (older cards) never reject.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from image_classifier.optionspec import DEFAULT_KEEP, check_keep

MAX_PROBABILITY = "max_probability"
FACE_DISTANCE = "face_distance"
#: A face model's photo without a face: the picture's distance to the nearest training picture.
PICTURE_DISTANCE = "picture_distance"
#: A face distance measured to the training faces of a person added by ``add`` from a few photos:
#: sparser than a trained person's, so its references are simulated (see inference.enrol).
ADDED_FACE_DISTANCE = "added_face_distance"
#: Kinds left out of the validation images counted and kept: references that are not validation
#: images (an added person's, simulated), or validation images already counted under another kind
#: (a face model's picture distances; its photos with a face count as face distances). Each is kept
#: ``keep`` by construction all the same.
UNCOUNTED_KINDS = (ADDED_FACE_DISTANCE, PICTURE_DISTANCE)
#: An ensemble's score: the minimum of its members' p-values (see the module docstring).
MEMBER_P_VALUE = "member_p_value"
#: The score of a rule that mixes kinds: a conformal p-value against the validation scores of the image's kind.
P_VALUE = "p_value"
#: Direction of each kind: +1 when higher means "more like a known class".
ORIENTATION = {MAX_PROBABILITY: 1.0, FACE_DISTANCE: -1.0, ADDED_FACE_DISTANCE: -1.0, PICTURE_DISTANCE: -1.0,
               MEMBER_P_VALUE: 1.0}
#: What ``Classifier.predict`` answers for an image the rule rejects.
UNKNOWN = "unknown"
#: How the rule is fitted, in the card (a card with another version is refitted by ``compare`` and
#: ``train``): 2 fits a face model's rule on its images with a face only (1: on all of them).
RULE_VERSION = 2


def score_kinds(probabilities: np.ndarray, details: Sequence[Mapping[str, Any]]) -> tuple[list[str], np.ndarray]:
    """Per image: its score kind and raw value (max probability, or a face's distance to the nearest
    training face where a face model found one: ``details['face_distance']``, or where it found
    none, the picture's distance to the nearest training picture: ``details['picture_distance']``;
    for an ensemble, the smallest member p-value ``details['member_p_value']``).

    The probabilities scored are the network's before calibration (the calibrated ones with the
    temperature taken out): the temperature is one number per model, and a small one (a model
    very sure of its validation images) pushes most float32 probabilities to exactly 1.0, where
    the familiar and the strange can no longer be told apart."""
    probs = np.asarray(probabilities, dtype=np.float64)
    kinds: list[str] = []
    values = np.empty(len(probs), dtype=np.float64)
    for i, row in enumerate(probs):
        detail = details[i] if i < len(details) else {}
        member_p, distance, picture = (detail.get(MEMBER_P_VALUE), detail.get("face_distance"),
                                       detail.get(PICTURE_DISTANCE))
        if member_p is not None:
            kinds.append(MEMBER_P_VALUE)
            values[i] = float(member_p)
        elif distance is not None:
            # A face nearest to a person added from a few photos has its own references.
            kinds.append(details[i].get("face_score_kind") or FACE_DISTANCE)
            values[i] = float(distance)
        elif picture is not None:
            kinds.append(PICTURE_DISTANCE)
            values[i] = float(picture)
        else:
            kinds.append(MAX_PROBABILITY)
            values[i] = float(row.max()) if row.size else 0.0
    return kinds, values


def _rejected_count(n: int, keep: float) -> int:
    """How many of ``n`` validation images of one kind the rule rejects: floor((1 - keep) n)."""
    return int(math.floor((1.0 - keep) * n + 1e-9))


@dataclass(frozen=True)
class Decision:
    """The rule applied to one image: ``score`` on the rule's scale against ``threshold``."""

    kind: str
    value: float  # the raw score: a probability, or a distance
    score: float  # what is compared with the threshold (the raw value, or a p-value)
    threshold: float
    accepted: bool

    def to_json(self) -> dict[str, Any]:
        return {"score": round(self.score, 6), "threshold": round(self.threshold, 6), "kind": self.kind,
                "value": round(self.value, 6)}


@dataclass(frozen=True)
class RejectionRule:
    """Which images count as none of the known classes (see the module docstring).

    ``references`` holds, per kind, the validation images' raw scores, sorted ascending.
    ``scale`` is ``max_probability`` (one kind, raw threshold) or ``p_value``.
    ``accept_within``: per distance kind, a distance within which an image is accepted whatever its
    p-value: a bound set from strangers, not from known photos (see inference.enrol: a person added
    from a few photos, whose own spread of distances the rule cannot know).
    """

    keep: float
    scale: str
    references: dict[str, np.ndarray]
    threshold: float
    accept_within: dict[str, float] = field(default_factory=dict)
    #: Which images the references are (a face model's: every training and validation photo,
    #: each left out of the banks; see ``training.face_references``).
    fitted_on: str = "validation"

    # -- fitting ---------------------------------------------------------------------------------
    @classmethod
    def fit(cls, kinds: Sequence[str], values: np.ndarray, keep: float = DEFAULT_KEEP, *,
            p_value: bool | None = None) -> RejectionRule:
        """The rule that keeps ``keep`` of these validation scores (per kind). ``p_value``: use the
        p-value scale (default: when the scores are not all ``max_probability``; a face model
        passes True, since its other images have the other kind)."""
        keep = check_keep(keep)
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0:
            raise ValueError("fitting a rejection rule needs at least one validation image")
        references = {k: np.sort(values[[i for i, kk in enumerate(kinds) if kk == k]]) for k in sorted(set(kinds))}
        if p_value is None:
            p_value = set(references) != {MAX_PROBABILITY}
        if p_value:
            return cls(keep, P_VALUE, references, 1.0 - keep)
        ref = references[MAX_PROBABILITY]
        m = _rejected_count(len(ref), keep)
        # Half-way between the last rejected and the first kept validation score: the decision on
        # the validation images is exactly "reject the m lowest" (ties at the boundary are kept).
        threshold = float(ref[0]) if m == 0 else float((ref[m - 1] + ref[m]) / 2)
        if m > 0 and ref[m - 1] == ref[m]:
            threshold = float(ref[m])
        return cls(keep, MAX_PROBABILITY, references, threshold)

    def with_keep(self, keep: float) -> RejectionRule:
        """The same rule keeping another share of the validation images (``--keep``, ``?keep=``):
        the threshold recomputed from the stored validation scores, as :meth:`fit` would have
        placed it, without predicting anything again."""
        keep = check_keep(keep)
        if self.scale != MAX_PROBABILITY:
            return replace(self, keep=keep, threshold=1.0 - keep)
        kinds = [k for k, ref in self.references.items() for _ in ref]
        values = np.concatenate([ref for ref in self.references.values()]) if kinds else np.empty(0)
        if len(values) == 0:
            return replace(self, keep=keep)
        return replace(RejectionRule.fit(kinds, values, keep, p_value=False), fitted_on=self.fitted_on)

    # -- applying --------------------------------------------------------------------------------
    def p_values(self, kinds: Sequence[str], values: np.ndarray) -> np.ndarray:
        """Per image: the fraction of its kind's validation scores that look no more like a known
        class than it does (1.0 for a kind the validation split never had: no evidence to reject)."""
        out = np.ones(len(values), dtype=np.float64)
        for i, (kind, value) in enumerate(zip(kinds, np.asarray(values, dtype=np.float64))):
            ref = self.references.get(kind)
            if ref is None or len(ref) == 0:
                continue
            if ORIENTATION[kind] > 0:  # a probability: validation scores <= it
                count = int(np.searchsorted(ref, value, side="right"))
            else:  # a distance: validation distances >= it
                count = len(ref) - int(np.searchsorted(ref, value, side="left"))
            out[i] = count / len(ref)
        return out

    def decide(self, kinds: Sequence[str], values: np.ndarray) -> list[Decision]:
        values = np.asarray(values, dtype=np.float64)
        if self.scale == P_VALUE:
            scores = self.p_values(kinds, values)
            out = []
            for kind, value, p in zip(kinds, values, scores):
                ref = self.references.get(kind)
                n = 0 if ref is None else len(ref)
                # p > 1 - keep, counted in whole images so that rounding never flips a boundary case.
                accepted = (n == 0 or round(p * n) > _rejected_count(n, self.keep)
                            or value <= self.accept_within.get(kind, -math.inf))
                out.append(Decision(kind, float(value), float(p), self.threshold, bool(accepted)))
            return out
        return [Decision(kind, float(v), float(v), self.threshold,
                         bool(v >= self.threshold) if kind == MAX_PROBABILITY else True)
                for kind, v in zip(kinds, values)]

    def accepts(self, probabilities: np.ndarray, details: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """The decision for each image from its probabilities and :meth:`Classifier.predict_details` dict."""
        return self.decide(*score_kinds(probabilities, details))

    # -- the card --------------------------------------------------------------------------------
    def kept_fraction(self) -> float:
        """The fraction of the validation images the rule keeps (at least ``keep``); references of
        :data:`UNCOUNTED_KINDS` are left out (not validation images, or counted already)."""
        real = {k: ref for k, ref in self.references.items() if k not in UNCOUNTED_KINDS}
        kinds = [k for k, ref in real.items() for _ in ref]
        if not kinds:
            return 1.0
        values = np.concatenate([ref for ref in real.values()])
        decisions = self.decide(kinds, values)
        return sum(d.accepted for d in decisions) / len(decisions) if decisions else 1.0

    def to_card(self) -> dict[str, Any]:
        """The card's ``rejection`` entry."""
        entry = {"score": self.scale, "keep": self.keep, "threshold": self.threshold, "fitted_on": self.fitted_on,
                 "version": RULE_VERSION,
                 "images": int(sum(len(r) for k, r in self.references.items() if k not in UNCOUNTED_KINDS)),
                 "kept": round(self.kept_fraction(), 6),
                 "kinds": {k: [round(float(v), 6) for v in ref] for k, ref in self.references.items()}}
        if self.accept_within:
            entry["accept_within"] = {k: round(float(v), 6) for k, v in self.accept_within.items()}
        return entry

    @classmethod
    def from_card(cls, entry: Mapping[str, Any] | None) -> RejectionRule | None:
        """The rule stored in a card (None when the card has none: an older model never rejects)."""
        if not entry:
            return None
        references = {str(k): np.sort(np.asarray(v, dtype=np.float64)) for k, v in (entry.get("kinds") or {}).items()
                      if k in ORIENTATION}
        within = {str(k): float(v) for k, v in (entry.get("accept_within") or {}).items() if k in ORIENTATION}
        return cls(float(entry["keep"]), str(entry["score"]), references, float(entry["threshold"]), within,
                   str(entry.get("fitted_on") or "validation"))

    def describe(self) -> str:
        """One line for people: what is scored and how much of the photos it was fitted on is kept."""
        kinds = " / ".join(k.replace("_", " ") for k in self.references)
        scale = "" if self.scale == MAX_PROBABILITY else f" (as p-values against {self.fitted_on})"
        return (f"{kinds}{scale}, threshold {self.threshold:.3f} keeps {100 * self.kept_fraction():.1f} % of "
                f"{self.fitted_on}")


def fit_rule(probabilities: np.ndarray, details: Sequence[Mapping[str, Any]], keep: float = DEFAULT_KEEP
             ) -> RejectionRule:
    """The rule fitted on validation predictions (probabilities with the temperature taken out,
    and their ``predict_details`` dicts) of one pass, on every image's score (a face model fits
    its own on its faces: ``FaceClassifier.fit_rejection_rule``)."""
    return RejectionRule.fit(*score_kinds(probabilities, details), keep)


def member_p_values(rule: RejectionRule, uncalibrated_probabilities: np.ndarray,
                    details: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """One model's conformal p-value of each image under its own ``rule`` (whatever the rule's
    scale), from its probabilities before calibration and its details: what an ensemble takes the
    minimum of (:data:`MEMBER_P_VALUE`)."""
    return rule.p_values(*score_kinds(uncalibrated_probabilities, details))


def fit_ensemble_rule(details: Sequence[Mapping[str, Any]], keep: float = DEFAULT_KEEP) -> RejectionRule:
    """An ensemble's rule from its validation images' details (each with ``member_p_value``): on
    the p-value scale, so it keeps ``keep`` of those images by construction."""
    missing = sum(1 for d in details if d.get(MEMBER_P_VALUE) is None)
    if missing:
        raise ValueError(f"{missing} validation images have no {MEMBER_P_VALUE}: the ensemble's members need rules")
    values = np.array([float(d[MEMBER_P_VALUE]) for d in details], dtype=np.float64)
    return RejectionRule.fit([MEMBER_P_VALUE] * len(values), values, keep, p_value=True)


def accepted_share(rule: RejectionRule, kind: str, values: Sequence[float] | np.ndarray) -> float | None:
    """The share of ``values`` (raw scores of one ``kind``) that ``rule`` accepts, e.g. the
    validation strangers' face distances (None when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return None
    return float(np.mean([d.accepted for d in rule.decide([kind] * len(values), values)]))


def tradeoff(rule: RejectionRule, strangers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``rule`` trades, as measured on the photos it was fitted on (``fitted_on``: validation,
    or a face model's training and validation photos): ``kept``, the share of those known
    photos it keeps (at least ``keep``), and for a face model whose card has them
    (``faces.strangers``), ``strangers_accepted``: the share of the known photos seen as strangers
    (each against the bank's faces of the *other* people) it would accept."""
    out: dict[str, Any] = {"keep": rule.keep, "kept": rule.kept_fraction(), "threshold": rule.threshold,
                           "scale": rule.scale, "fitted_on": rule.fitted_on, "strangers_accepted": None, "strangers": 0,
                           "strangers_method": None}
    distances = (strangers or {}).get("distances")
    if distances:
        out.update(strangers_accepted=accepted_share(rule, FACE_DISTANCE, distances), strangers=len(distances),
                   strangers_method=(strangers or {}).get("method"))
    return out


def describe_tradeoff(trade: Mapping[str, Any]) -> str:
    """One line for people, e.g. ``keep 0.95: keeps 95.1 % of the known training and validation
    photos, accepts 2.6 % of 305 known faces seen as strangers (...)``."""
    text = (f"keep {trade['keep']:g}: keeps {100 * trade['kept']:.1f} % of the known "
            f"{trade['fitted_on']} photos")
    if trade.get("strangers_accepted") is None:
        return text + " (strangers accepted: not measured on validation for this model)"
    return (text + f", accepts {100 * trade['strangers_accepted']:.1f} % of {trade['strangers']} known faces "
            "seen as strangers (each photo against the other people's faces)")


def annotate_faces(details: list[dict[str, Any]], classes: Sequence[str], rule: RejectionRule | None) -> None:
    """Each face of a face model's photos (``details[i]['faces']``, see ``FacePath.every_face``)
    gets its own answer, in place: ``label`` (a class, or ``unknown``), ``unknown``, ``closest``
    ({label, probability}: the head's most probable class for that face), ``probability`` and
    ``rejection``. A face is unknown when ``rule`` rejects its distance to the nearest training face,
    as it rejects a photo scored by that distance. (The model's ``max_distance`` does not apply: it
    chooses between a face and the whole-photo network for the *photo*'s answer, and a face on its
    own has no whole-photo answer. Measured on 20 collages of 4 athletes' test faces and a stranger:
    with it, 75 of 80 known faces named and 14 collages all right; without it 80 of 80 and 19, the
    strangers' 19 of 20 unknown either way.) Without a rule (none, or ``--no-reject``) no face is
    unknown. A face without a descriptor has no answer (``label`` None). Answering the same details
    again, with another rule (another ``--keep``), redoes each face's decision."""
    for detail in details:
        for face in detail.get("faces") or []:
            probs = face.pop("probabilities", None)
            kind = face.pop("score_kind", None) or (face.get("rejection") or {}).get("kind") or FACE_DISTANCE
            if probs is not None:
                best = int(np.argmax(probs))
                face["closest"] = {"label": classes[best], "probability": float(probs[best])}
                face["probability"] = float(probs[best])
            if face.get("closest") is None or face.get("distance") is None:
                face.update(label=None, unknown=None, closest=None, probability=None, rejection=None)
                continue
            decision = rule.decide([kind], [float(face["distance"])])[0] if rule is not None else None
            unknown = decision is not None and not decision.accepted
            face["unknown"] = bool(unknown)
            face["label"] = UNKNOWN if unknown else face["closest"]["label"]
            face["rejection"] = None if decision is None else decision.to_json()


def annotate(probabilities: np.ndarray, details: list[dict[str, Any]], classes: Sequence[str],
             rule: RejectionRule | None, scored: np.ndarray | None = None) -> list[bool]:
    """Add ``unknown``, ``closest`` and ``rejection`` to each details dict (in place); returns the
    ``unknown`` flags. Without a ``rule`` nothing is rejected and ``rejection`` is None. ``scored``:
    the probabilities the rule scores (default ``probabilities``; a calibrated model's
    uncalibrated ones, see :func:`score_kinds`)."""
    probs = np.asarray(probabilities)
    scored = probs if scored is None else np.asarray(scored)
    decisions = rule.accepts(scored, details) if rule is not None and len(probs) else [None] * len(probs)
    flags = []
    for row, detail, decision in zip(probs, details, decisions):
        best = int(row.argmax())
        unknown = decision is not None and not decision.accepted
        detail["unknown"] = unknown
        detail["closest"] = {"label": classes[best], "probability": float(row[best])}
        detail["rejection"] = None if decision is None else decision.to_json()
        flags.append(unknown)
    return flags
