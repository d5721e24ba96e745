"""The choice of the served model (issue 25), its parts on synthetic evidence: the noise-aware rule,
folds that keep duplicate groups together, the face model's out-of-fold estimate, and strangers
measured per trial. compare's use of them on real photos is in tests/test_choice_people.py."""
from __future__ import annotations

import numpy as np
import pytest

from image_classifier.evaluate.choice import (
    ACCURACY, CASCADE, ENSEMBLE, MODEL, ORDER, PARAMETERS, SIMPLICITY, STRANGERS, Candidate, CrossValidated, choose,
    paired_difference,
)
from image_classifier.evaluate.cross_validation import summarise
from image_classifier.evaluate.strangers import (
    Trial, conformal_p_values, face_first, loco_trials, single, strangers_accepted, strangest,
)
from image_classifier.faces.detect import FaceAnalysis
from image_classifier.training.face_head import face_model_oof
from image_classifier.training.folds import linear_probe_oof, repeated_folds


def _candidate(name: str, right: int, n: int = 66, *, kind: str = MODEL, params: int = 1000, seed: int = 0,
               strangers: np.ndarray | None = None, cv: CrossValidated | None = None) -> Candidate:
    """``right`` of ``n`` validation images right, the wrong ones drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    correct = np.ones(n, dtype=bool)
    correct[rng.choice(n, n - right, replace=False)] = False
    return Candidate(name, kind, correct, np.where(correct, 0.1, 2.0), params, cv=cv, strangers_accepted=strangers)


def _accepting(rate: float, n: int = 40) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[: int(round(rate * n))] = True
    return out


# ---- the rule ------------------------------------------------------------------------------------

def test_the_paired_bootstrap_interval_contains_the_difference_and_0_for_noise():
    a = np.ones(66)
    b = a.copy()
    b[:2] = 0  # two images apart: noise on 66
    est, low, high = paired_difference(a, b)
    assert est == pytest.approx(2 / 66) and low <= 0.0 <= high
    b[:20] = 0  # twenty apart, all in one direction: not noise
    est, low, high = paired_difference(a, b)
    assert low > 0.0 and low < est < high


def test_a_difference_inside_the_noise_is_a_tie_and_goes_to_the_simpler_candidate():
    single = _candidate("face", 63)
    cascade = _candidate("face+cnn", 64, kind=CASCADE, params=2000, seed=1)
    choice = choose([cascade, single], people=False)
    assert choice.chosen == "face" and choice.decided_by == SIMPLICITY
    assert set(choice.tied) == {"face", "face+cnn"}
    diff = next(d for d in choice.accuracy_differences if d.b == "face+cnn")
    assert diff.tie and diff.evidence == "val"


def test_ties_among_single_models_go_to_the_fewest_parameters_then_the_order_given():
    big = _candidate("big", 60, params=10_000, seed=2)
    small = _candidate("small", 59, params=100, seed=3)
    assert choose([big, small], people=False).chosen == "small"
    assert choose([big, small], people=False).decided_by == PARAMETERS
    twin = _candidate("twin", 59, params=100, seed=4)
    choice = choose([small, twin], people=False)
    assert choice.chosen == "small" and choice.decided_by == ORDER


def test_a_candidate_better_beyond_the_noise_wins_whatever_its_kind():
    single = _candidate("alone", 44, seed=5)
    mix = _candidate("ensemble", 66, kind=ENSEMBLE, params=5000)
    choice = choose([single, mix], people=False)
    assert choice.chosen == "ensemble" and choice.decided_by == ACCURACY and choice.tied == ["ensemble"]


def test_for_people_a_model_that_accepts_strangers_is_not_eligible_even_when_more_accurate():
    cnn = _candidate("resnet50", 66, strangers=_accepting(0.85))
    face = _candidate("face_embedding", 64, strangers=_accepting(0.02), seed=6)
    choice = choose([cnn, face], people=True)
    assert choice.chosen == "face_embedding" and choice.can_reject is True
    assert choice.eligible == ["face_embedding"]
    # Without the people rule the same evidence is a tie, which the order given breaks.
    assert choose([cnn, face], people=False).chosen == "resnet50"


def test_when_no_candidate_turns_strangers_away_the_choice_says_so_and_keeps_those_that_turn_away_the_most():
    a = _candidate("a", 66, strangers=_accepting(0.6), seed=7)
    b = _candidate("b", 50, strangers=_accepting(0.4))
    twin = _candidate("twin", 66, strangers=_accepting(0.45), seed=8)  # within the noise of b's 0.4
    c = _candidate("c", 66, strangers=None)  # not measured: nothing shows it can
    choice = choose([a, b, twin, c], people=True)
    assert choice.can_reject is False and choice.eligible == ["b", "twin"]
    assert choice.chosen == "twin" and choice.decided_by == ACCURACY  # b is beaten beyond the noise


def test_a_dozen_validation_strangers_missing_the_bar_by_one_photo_do_not_hand_the_choice_to_the_simplest():
    # A small folder: 12 people, one validation photo each. The face model accepts 2 of the 12
    # left-out people (17 %, the bar is 10 %), the CNN 11; both name every validation photo right.
    face = _candidate("face_embedding", 12, 12, params=2_550_000, strangers=_accepting(2 / 12, 12))
    cnn = _candidate("mobilenet_v2", 12, 12, params=2_230_000, strangers=_accepting(11 / 12, 12))
    choice = choose([cnn, face], people=True)
    assert choice.can_reject is False and choice.eligible == ["face_embedding"]
    assert choice.chosen == "face_embedding"
    # Without the strangers the two tie on accuracy, and the fewer parameters decide.
    assert choose([cnn, face], people=False).chosen == "mobilenet_v2"


def test_among_eligible_ties_for_people_fewer_strangers_beyond_the_noise_decides():
    loose = _candidate("loose", 64, strangers=_accepting(0.10, 200), seed=8)
    tight = _candidate("tight", 64, kind=CASCADE, strangers=_accepting(0.0, 200), seed=9)
    choice = choose([loose, tight], people=True)
    assert choice.chosen == "tight" and choice.decided_by == STRANGERS


def test_two_cross_validated_candidates_are_compared_out_of_fold():
    def cv(acc: float) -> CrossValidated:
        correct = np.r_[np.ones(int(acc * 300)), np.zeros(300 - int(acc * 300))]
        return CrossValidated(correct, 1 - correct, np.full(10, acc), np.full(10, 0.2), 5, 2, "synthetic")

    # Identical on validation, 8 points apart over 300 out-of-fold images: not a tie.
    a = _candidate("a", 60, cv=cv(0.96))
    b = _candidate("b", 60, cv=cv(0.88))
    choice = choose([b, a], people=False)
    assert choice.chosen == "a" and choice.decided_by == ACCURACY
    assert choice.accuracy_differences[0].evidence == "cv"


def test_the_rule_refuses_candidates_scored_on_other_images():
    with pytest.raises(ValueError, match="same validation images"):
        choose([_candidate("a", 10, n=20), _candidate("b", 10, n=21)], people=False)
    with pytest.raises(ValueError, match="unique"):
        choose([_candidate("a", 10), _candidate("a", 11)], people=False)
    with pytest.raises(ValueError, match="kind"):
        Candidate("x", "committee", np.ones(3, bool), np.zeros(3), 1)


# ---- folds -----------------------------------------------------------------------------------------

def test_folds_are_stratified_and_keep_every_duplicate_group_in_one_fold():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    groups = np.full(len(labels), -1)
    groups[[0, 1, 2]] = 7  # a group of three copies
    groups[[50, 51]] = 8
    groups[rng.choice(np.arange(60, 120), 10, replace=False)] = 9
    folds = repeated_folds(labels, groups, repeats=5, folds=2, seed=3)
    assert len(folds) == 10
    for r in range(5):
        parts = [f for f in folds if f.repeat == r]
        assert sorted(np.concatenate([f.test for f in parts]).tolist()) == list(range(len(labels)))
        for f in parts:
            for g in (7, 8, 9):
                members = np.flatnonzero(groups == g)
                assert np.isin(members, f.test).all() or not np.isin(members, f.test).any()
            counts = np.bincount(labels[f.test], minlength=3)
            assert counts.max() - counts.min() <= 8  # stratified up to the groups
    # Repeats shuffle differently; the same seed gives the same folds.
    assert any(not np.array_equal(folds[0].test, folds[2 * r].test) for r in range(1, 5))
    again = repeated_folds(labels, groups, repeats=5, folds=2, seed=3)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again))


def test_folds_need_two_images_of_every_class():
    with pytest.raises(ValueError, match="at least 2 images of every class"):
        repeated_folds([0, 0, 1], [-1, -1, -1])


def test_a_linear_probe_out_of_fold_never_sees_the_image_it_predicts():
    # Features that are pure noise with labels: any accuracy above chance would be a leak.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 20))
    y = np.repeat([0, 1, 2], 30)
    folds = repeated_folds(y, np.full(90, -1), seed=0)
    cv = summarise(linear_probe_oof(x, y, folds, 3), y, folds, "probe")
    assert cv.accuracy < 0.5 and cv.repeats == 5 and cv.folds == 2 and cv.images == 90
    # The same features with the label written into them: nearly perfect.
    x[:, :10] += 3 * y[:, None]
    assert summarise(linear_probe_oof(x, y, folds, 3), y, folds, "probe").accuracy > 0.95


def _face(centre: np.ndarray, rng: np.random.Generator, spread: float = 0.02) -> FaceAnalysis:
    d = centre + rng.normal(scale=spread, size=128)
    return FaceAnalysis(100, 100, [object()], d[None, :].astype(np.float32))  # type: ignore[list-item]


def test_the_face_models_out_of_fold_answers_come_from_faces_and_the_fallback_elsewhere():
    rng = np.random.default_rng(2)
    centres = rng.normal(scale=0.3, size=(3, 128))
    y = np.repeat([0, 1, 2], 20)
    analyses = [_face(centres[c], rng) for c in y]
    analyses[5] = None  # no face: the fallback answers
    fallback = np.zeros((5, 60, 3))
    fallback[:, :, 2] = 1.0  # the fallback always says class 2
    folds = repeated_folds(y, np.full(60, -1), seed=0)
    probs = face_model_oof(analyses, y, folds, 3, fallback, c=1.0, max_distance=0.6)
    assert (probs[:, 5].argmax(axis=1) == 2).all()  # the face-less image: the fallback's answer
    faces = np.delete(np.arange(60), 5)
    assert (probs[:, faces].argmax(axis=2) == y[faces]).mean() > 0.95
    # Every face is far from its person's other faces (spread 0.02 x sqrt(128) x sqrt(2), about 0.32):
    # with alone_within below that, each face answers together with the fallback, which here is
    # sure of class 2, so the product leans to it; with alone_within above it nothing changes.
    blended = face_model_oof(analyses, y, folds, 3, fallback, c=1.0, max_distance=0.6, alone_within=0.1)
    assert (blended[:, faces].argmax(axis=2) == 2).all()
    same = face_model_oof(analyses, y, folds, 3, fallback, c=1.0, max_distance=0.6, alone_within=0.59)
    np.testing.assert_allclose(same, probs)


def test_a_face_further_than_alone_within_answers_with_the_fallback():
    from image_classifier.models.face_embedding import face_answers, with_fallback

    face = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    fallback = np.array([[0.2, 0.7, 0.1], [0.2, 0.7, 0.1]])
    # The product 0.12, 0.21, 0.01, normalised: the fallback's class wins.
    np.testing.assert_allclose(with_fallback(face[:1], fallback[:1]), [[0.12 / 0.34, 0.21 / 0.34, 0.01 / 0.34]])
    out = face_answers(face, np.array([0.3, 0.5]), fallback, alone_within=0.45)
    np.testing.assert_allclose(out[0], face[0])  # near a training face: the face alone
    assert out[1].argmax() == 1 and out[1].sum() == pytest.approx(1.0)
    # A class the face head rules out stays out (a probability of 0 is never multiplied back up).
    assert with_fallback(np.array([[0.5, 0.5, 0.0]]), np.array([[0.0, 0.2, 0.8]]))[0].argmax() == 1


# ---- strangers -------------------------------------------------------------------------------------

def test_conformal_p_values_follow_the_direction_of_the_score():
    refs = np.array([0.3, 0.4, 0.5, 0.6])
    # A distance: lower is more known; a probability: higher is.
    assert conformal_p_values(refs, np.array([0.2, 0.45, 0.9]), "face_distance").tolist() == [1.0, 0.5, 0.0]
    assert conformal_p_values(refs, np.array([0.2, 0.45, 0.9]), "max_probability").tolist() == [0.0, 0.5, 1.0]


def test_leave_one_class_out_trials_take_the_strangers_with_a_face():
    y = np.array([0, 0, 1, 1, 2, 2])
    face = np.array([True, False, True, True, False, False])
    trials = loco_trials(y, face, ["a", "b", "c"])
    assert [t.label for t in trials] == ["a left out", "b left out"]  # c has no stranger with a face
    assert trials[0].strangers.tolist() == [0] and trials[0].known.tolist() == [2, 3, 4, 5]
    assert trials[1].strangers.tolist() == [2, 3] and trials[1].left_out == 1


def test_a_trial_with_fewer_than_twenty_known_images_still_places_its_rule_at_keep():
    # 15 known images (a class of a small validation split left out): their p-values 1/15 ... 1.
    known = np.arange(1, 16) / 15
    trial = Trial("a left out", np.arange(15), np.arange(3), left_out=0, known_p={"m": known},
                  strangers_p={"m": np.array([1 / 15, 2 / 15, 1.0])})
    # A stranger stranger than all known images but one is turned away: at whole images a rule keeping
    # 95 % of 15 images can reject none of them, and accepted it.
    assert strangers_accepted([trial], single("m"), 0.95).tolist() == [False, True, True]
    # The known images themselves: 14 of 15 kept (93 %), near the 95 % asked; at whole images, all 15.
    trial.strangers_p = {"m": known}
    assert int(strangers_accepted([trial], single("m"), 0.95).sum()) == 14
    assert int(strangers_accepted([trial], single("m"), 0.5).sum()) == 8  # the upper half and its median


def test_candidates_combine_their_members_p_values_as_their_saved_rules_do():
    trial = Trial("t", np.arange(20), np.arange(4))
    known = np.linspace(0.05, 1.0, 20)
    trial.known_p = {"face": known, "cnn": known[::-1]}
    trial.strangers_p = {"face": np.array([0.0, 0.0, 0.0, 0.9]), "cnn": np.array([1.0, 1.0, 1.0, 1.0])}
    keep = 0.9
    assert strangers_accepted([trial], single("cnn"), keep).all()  # sure of every stranger
    assert strangers_accepted([trial], single("face"), keep).tolist() == [False, False, False, True]
    # A face-first cascade scores every image by its face model.
    assert strangers_accepted([trial], face_first("face"), keep).tolist() == [False, False, False, True]
    assert not strangers_accepted([trial], strangest(["face", "cnn"]), keep)[:3].any()


def test_the_report_says_on_how_many_strangers_no_candidate_met_the_bar_in_both_languages():
    from image_classifier.i18n import translator
    from image_classifier.report.narrative import cannot_reject_sentence
    from image_classifier.results.schema import CandidateEvidence, Selection

    def evidence(name: str, rate: float | None, strangers: int) -> CandidateEvidence:
        return CandidateEvidence(name, MODEL, "", 1000, 1.0, 0.1, 12, strangers_accepted=rate, strangers=strangers)

    selection = Selection("face_embedding", people=True, can_reject=False, max_strangers=0.10,
                          strangers_source="leave-one-class-out on validation",
                          candidates=[evidence("mobilenet_v2", 11 / 12, 12), evidence("face_embedding", 2 / 12, 12)])
    english = cannot_reject_sentence(selection, translator("en"))
    assert "at most 10% of the strangers" in english and "the fewest accepted is 17% of 12" in english
    assert "el que menos acepta, 17 % de 12" in cannot_reject_sentence(selection, translator("es"))
    assert cannot_reject_sentence(Selection("a", people=True, can_reject=True, candidates=selection.candidates)) == ""
    unmeasured = Selection("a", people=True, can_reject=False, candidates=[evidence("a", None, 0)])
    assert cannot_reject_sentence(unmeasured).startswith("No candidate's strangers could be measured")
