"""The report's sentences: the headline, what is significant, the honesty notes.

Shared by the Markdown and HTML renderers so both say the same thing, in the language of the
translator they are given (English by default, as the CLI prints them). Returns plain text; the
HTML renderer escapes it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from image_classifier.i18n import Translator, translator
from image_classifier.report.tables import fmt_mb, fmt_ms, fmt_params, forward_pass_is_a_part
from image_classifier.results import TEST_IMAGES, CandidateEvidence, Duplicates, Selection, ShortcutAudit, Study

EN = translator("en")

#: The study's published accuracies, measured on all 437 images of which it had trained on 351.
PUBLISHED = {"alexnet_like": 0.90, "mobilenet_v2": 0.94, "resnet50": 0.94}
PUBLISHED_NAMES = {"alexnet_like": "AlexNet-like", "mobilenet_v2": "MobileNetV2", "resnet50": "ResNet-50"}
ALPHA = 0.05

#: ``Study.scored_set`` values other than "test images" (what ``evaluate`` scored), and the
#: subset each names; "images" is every image of a folder.
SCORED_SUBSETS = {"train images": "report.subset.train", "val images": "report.subset.val"}
ALL_IMAGES = "images"


@dataclass(frozen=True)
class Verdict:
    """McNemar's verdict on one pair of models, as a sentence; ``significant``: p < :data:`ALPHA`."""

    text: str
    significant: bool


def scored_noun(study: Study, t: Translator = EN) -> str:
    """What the scored images are called ("test images", "val images", "images") in ``t``'s language."""
    scored = study.scored_set
    if scored == TEST_IMAGES:
        return t("report.scored.test")
    if scored == ALL_IMAGES:
        return t("report.scored.all")
    if scored in SCORED_SUBSETS:
        return t("report.scored.subset", subset=t(SCORED_SUBSETS[scored]))
    return scored  # a name this module does not know: shown as the study gives it


def _describe(r: dict, study: Study, t: Translator) -> str:
    test = study.scored_set == TEST_IMAGES
    text = t("report.narrative.describe",
             accuracy_word=t("report.narrative.accuracy_word.test") if test else
             t("report.narrative.accuracy_word.plain"),
             accuracy=t.percent(r["test_accuracy"], 1), low=t.percent(r["test_accuracy_ci_low"], 0),
             high=t.percent(r["test_accuracy_ci_high"], 0), n=r["test_n"], noun=scored_noun(study, t),
             macro_f1=t.number(r["macro_f1"], 3))
    if forward_pass_is_a_part(r) and r["e2e_latency_ms_p50"] is not None:
        text += t("report.narrative.describe_e2e_latency", e2e_ms=t.localize_number(fmt_ms(r["e2e_latency_ms_p50"])),
                  forward_ms=t.localize_number(fmt_ms(r["latency_ms_p50"])))
    elif r["latency_ms_p50"] is not None:
        text += t("report.narrative.describe_latency", ms=t.localize_number(fmt_ms(r["latency_ms_p50"])))
    if r["size_mb"] is not None:
        text += t("report.narrative.describe_size", mb=t.localize_number(fmt_mb(r["size_mb"])),
                  params=t.localize_number(fmt_params(r["params"])))
    return text


def headline(study: Study, t: Translator = EN) -> str:
    """One sentence: which model, how accurate, how fast, how big."""
    rows = study.rows()
    best = next((r for r in rows if r["selected"]), None)
    if best is not None:
        return t("report.narrative.headline.best", model=best["model"], description=_describe(best, study, t))
    if len(rows) == 1:
        return t("report.narrative.headline.single", model=rows[0]["model"], description=_describe(rows[0], study, t))
    return t("report.narrative.headline.none")


def _p(value: float, t: Translator) -> str:
    return t.localize_number(f"{value:.3g}")


def significance_verdicts(study: Study, t: Translator = EN) -> list[Verdict]:
    """Plain-language verdict on every pair of models from the exact McNemar test, the
    significant ones first."""
    pairs = study.pairwise
    if not pairs:
        return []
    acc = {m.name: m.test.accuracy for m in study.models}
    significant, noise = [], []
    for p in pairs:
        a, b, a_only, b_only = p.model_a, p.model_b, p.a_only_correct, p.b_only_correct
        if acc[b] > acc[a]:
            a, b, a_only, b_only = b, a, b_only, a_only
        detail = t("report.narrative.pair.detail", a=a, b=b, accuracy_a=t.percent(acc[a], 1),
                   accuracy_b=t.percent(acc[b], 1), a_only=a_only, b_only=b_only, p=_p(p.p_value, t))
        if p.p_value < ALPHA:
            holm = p.p_holm
            extra = ""
            if holm is not None and len(pairs) > 1:
                extra = (t("report.narrative.pair.holm_still", n=len(pairs)) if holm < ALPHA else
                         t("report.narrative.pair.holm_not", n=len(pairs), p_holm=_p(holm, t)))
            significant.append(Verdict(t("report.narrative.pair.significant", a=a, b=b, detail=detail, holm=extra),
                                       True))
        else:
            noise.append(Verdict(t("report.narrative.pair.noise", a=a, b=b, detail=detail), False))
    return significant + noise


def significance_lines(study: Study, t: Translator = EN) -> list[str]:
    """The sentences of :func:`significance_verdicts`."""
    return [v.text for v in significance_verdicts(study, t)]


def significance_summary(study: Study, t: Translator = EN) -> str:
    pairs = study.pairwise
    if not pairs:
        return ""
    n_sig = sum(1 for p in pairs if p.p_value < ALPHA)
    n = study.models[0].test.n
    alpha = t.localize_number(str(ALPHA))
    head = t("report.narrative.summary.head", n=n)
    if n_sig == 0:
        return head + t.plural("report.narrative.summary.none", len(pairs), alpha=alpha)
    rest = len(pairs) - n_sig
    text = head + t.plural("report.narrative.summary.some", n_sig, total=len(pairs), alpha=alpha)
    if rest:
        text += t.plural("report.narrative.summary.rest", rest)
    return text + "."


def uncertainty_note(study: Study, t: Translator = EN) -> str:
    rows = study.rows()
    if not rows:
        return ""
    n = rows[0]["test_n"]
    widths = [r["test_accuracy_ci_high"] - r["test_accuracy_ci_low"] for r in rows]
    points = t.number(max(widths) / 2 * 100, 0)
    lead = (t("report.narrative.uncertainty.test", n=n, points=points) if study.scored_set == TEST_IMAGES
            else t("report.narrative.uncertainty.scored", n=n, points=points))
    return (lead
            + (t("report.narrative.uncertainty.several_models") if len(rows) > 1 else
               t("report.narrative.uncertainty.single_model"))
            + (t("report.narrative.uncertainty.selection") if study.selection is not None else ""))


def published_note(study: Study, t: Translator = EN) -> str:
    """One sentence on the study's published accuracies; only where held-out test numbers are shown."""
    if study.scored_set != TEST_IMAGES:
        return ""
    rows = {r["model"]: r for r in study.rows()}
    here = [f"{PUBLISHED_NAMES[k]} {t.number(rows[k]['test_accuracy'], 2)}" for k in PUBLISHED if k in rows]
    published = " / ".join(f"{t.number(v, 2)} {PUBLISHED_NAMES[k]}" for k, v in PUBLISHED.items())
    sentence = t("report.narrative.published", published=published)
    if here:
        sentence += t("report.narrative.published_here", here=t("report.format.number_list_separator").join(here))
    return sentence + "."


def calibration_note(study: Study, t: Translator = EN) -> str:
    eces = {m.name: m.test.ece for m in study.models if m.test.ece is not None and math.isfinite(m.test.ece)}
    if not eces:
        return ""
    worst = max(eces, key=eces.__getitem__)
    best = min(eces, key=eces.__getitem__)
    meaning = t("report.narrative.calibration.meaning")
    if len(eces) == 1:
        return t("report.narrative.calibration.single", ece=t.number(eces[best], 3), meaning=meaning)
    return t("report.narrative.calibration.range", best_ece=t.number(eces[best], 3), best=best,
             worst_ece=t.number(eces[worst], 3), worst=worst, meaning=meaning)


#: ECE at or below this on the scored images: the served probabilities count as calibrated.
CALIBRATED_ECE = 0.05


def calibration_verdict(study: Study, t: Translator = EN) -> str:
    """Whether the probabilities the models serve (calibrated by their temperature) can be read as
    probabilities: ECE <= :data:`CALIBRATED_ECE` on the scored images, and what calibration changed."""
    scored = [m for m in study.models if m.test.ece is not None and math.isfinite(m.test.ece)
              and m.test.ece_uncalibrated is not None]
    if not scored:
        return ""
    good = [m.name for m in scored if m.test.ece <= CALIBRATED_ECE]
    poor = [m.name for m in scored if m.test.ece > CALIBRATED_ECE]
    sep = t("report.format.number_list_separator")
    limit = t.number(CALIBRATED_ECE, 2)
    if not poor:
        return t("report.narrative.calibrated.all", limit=limit)
    if not good:
        return t("report.narrative.calibrated.none", limit=limit, models=sep.join(poor))
    return t("report.narrative.calibrated.some", limit=limit, good=sep.join(good), poor=sep.join(poor))


def timing_note(study: Study, t: Translator = EN) -> str:
    """A warning when the machine was busy while latencies were measured (they are then pessimistic)."""
    cores = study.environment.machine.get("logical cores")
    loads = [(m.name, m.speed.load_avg_1m if m.speed is not None else None) for m in study.models]
    busy = [(n, v) for n, v in loads if v is not None and cores and v > cores]
    if not busy:
        return ""
    listed = t("report.format.number_list_separator").join(f"{n} {t.number(v, 1)}" for n, v in busy)
    return t("report.narrative.timing", cores=cores, listed=listed)


def duplicate_sentences(dups: Duplicates, t: Translator = EN) -> tuple[str, str]:
    """What the data check found and how the split kept each duplicate group together, in ``t``'s
    language, from the counts; a run saved without the counts keeps its stored English sentences."""
    if not dups.counted:
        return dups.summary, dups.policy
    summary = t("report.data.duplicates.summary", exact_groups=dups.exact_groups, exact_files=dups.exact_files,
                near_pairs=dups.near_pairs, near_groups=dups.near_groups)
    items = [t("report.data.duplicates.where_item", count=n, subset=t.get(f"report.subset.{subset}", subset))
             for subset, n in sorted(dups.groups_by_subset.items())]
    where = t("report.data.duplicates.where", where=", ".join(items)) if items else ""
    policy = t("report.data.duplicates.policy", groups=len(dups.groups), images=dups.images_in_groups, where=where,
               crossing=dups.crossing_subsets)
    return summary, policy


# ---- the shortcut audit ---------------------------------------------------------------------------

#: "Far above chance": a model keeps at least this share of its margin over chance (its plain
#: accuracy on the same images minus chance) with the faces masked; "collapses": greyscale leaves
#: it at or below this share of its margin.
SHORTCUT_SHARE = 0.5
#: Fewer images than this say too little for a sentence either way (one image is then > 10 points).
SHORTCUT_MIN_IMAGES = 10


def _kept_share(value: float | None, full: float | None, chance: float, n: int) -> float | None:
    """Which share of its margin over chance a model keeps under a variant (None: nothing to judge)."""
    if value is None or full is None or n < SHORTCUT_MIN_IMAGES or full - chance <= 0:
        return None
    return (value - chance) / (full - chance)


def reads_without_face(audit: ShortcutAudit) -> bool | None:
    """True when the model stays far above chance with the faces masked (it reads background, kit
    or court): accuracy with the faces masked >= chance + :data:`SHORTCUT_SHARE` x (its plain
    accuracy on the same images - chance). None when there is nothing to judge."""
    kept = _kept_share(audit.face_masked, audit.accuracy_with_face, audit.chance, audit.images_with_face)
    return None if kept is None else kept >= SHORTCUT_SHARE


def reads_colour(audit: ShortcutAudit) -> bool | None:
    """True when the model collapses in greyscale (it reads colour): greyscale accuracy <= chance +
    :data:`SHORTCUT_SHARE` x (its plain accuracy - chance). None when there is nothing to judge."""
    kept = _kept_share(audit.greyscale, audit.accuracy, audit.chance, audit.greyscale_images)
    return None if kept is None else kept <= SHORTCUT_SHARE


def shortcut_sentences(study: Study, t: Translator = EN) -> list[str]:
    """The audit in plain sentences: the rule once, then per model what it reads, with the numbers."""
    audited = [m for m in study.models if m.shortcut is not None]
    if not audited:
        return []
    first = audited[0].shortcut
    assert first is not None
    out = [t("report.shortcut.rule", share=t.percent(SHORTCUT_SHARE, 0), chance=t.percent(first.chance, 1),
             classes=round(1 / first.chance_uniform) if first.chance_uniform else 0,
             majority=t.percent(first.chance_majority, 1))]
    for m in audited:
        a = m.shortcut
        assert a is not None
        common = dict(model=m.name, chance=t.percent(a.chance, 1))
        face = reads_without_face(a)
        if face is not None:
            key = "report.shortcut.reads_background" if face else "report.shortcut.needs_face"
            out.append(t(key, masked=t.percent(a.face_masked, 1), full=t.percent(a.accuracy_with_face, 1),
                         only=t.percent(a.face_only, 1), n=a.images_with_face, **common))
        elif a.faces_looked_for and a.images_with_face < SHORTCUT_MIN_IMAGES:
            out.append(t("report.shortcut.too_few_faces", n=a.images_with_face, minimum=SHORTCUT_MIN_IMAGES,
                         model=m.name))
        grey = reads_colour(a)
        if grey is not None:
            key = "report.shortcut.reads_colour" if grey else "report.shortcut.holds_in_grey"
            out.append(t(key, grey=t.percent(a.greyscale, 1), full=t.percent(a.accuracy, 1), n=a.greyscale_images,
                         **common))
        own = t.get(f"report.shortcut.{m.family}_model", "", model=m.name)  # a kind's own note (the face model's)
        if own and a.images_with_face:
            out.append(own)
    if not first.faces_looked_for:
        out.append(t("report.shortcut.no_survey"))
    elif first.no_face:
        out.append(t("report.shortcut.left_out", no_face=first.no_face, images=first.images))
    return out


def ensemble_sentences(study: Study, t: Translator = EN) -> list[str]:
    """What compare found of the weighted mix: served (with its latency), a candidate not chosen, a
    single model, or over the latency budget, with its validation numbers; then how its weights are
    fitted. Empty when not tried."""
    info = study.ensemble
    if info is None:
        return []
    mix = t("report.format.number_list_separator").join(
        t("report.ensemble.mix_item", model=m.name, weight=t.number(m.weight, 2)) for m in info.chosen)
    common = dict(images=info.val_images, mix=mix, loss=t.number(info.val_log_loss, 4),
                  single=info.best_single or "–", single_loss=t.number(info.best_single_val_log_loss, 4),
                  accuracy=t.percent(info.val_accuracy, 1), single_accuracy=t.percent(info.best_single_val_accuracy, 1))
    out = []
    if info.outcome == "over_budget":
        out.append(t("report.ensemble.over_budget", budget=t.localize_number(fmt_ms(info.max_latency_ms))))
    elif info.outcome == "single":
        out.append(t("report.ensemble.single", **common))
    elif info.outcome == "kept":
        out.append(t("report.ensemble.kept", name=info.name or "", **common))
        row = next((m for m in study.models if m.name == info.name), None)
        speed = row.speed if row is not None else None
        if speed is not None and speed.e2e_latency_ms_p50 is not None:
            out.append(t("report.ensemble.latency", ms=t.localize_number(fmt_ms(speed.e2e_latency_ms_p50)),
                         sum=t.localize_number(fmt_ms(info.member_latency_ms))))
    else:  # a candidate, not served
        selected = study.selection.best if study.selection is not None else None
        out.append(t("report.ensemble.not_chosen", selected=selected or "–", **common))
    if info.max_latency_ms is not None and info.outcome != "over_budget":
        out.append(t("report.ensemble.budget", budget=t.localize_number(fmt_ms(info.max_latency_ms)),
                     sum=t.localize_number(fmt_ms(info.member_latency_ms))))
    out.append(t("report.ensemble.how"))
    return out


def open_set_note(study: Study, t: Translator = EN) -> str:
    """How "none of these" was measured and what the best AUROC means, or "" when nothing was measured."""
    measured = [m for m in study.models if m.open_set is not None and m.open_set.auroc is not None]
    if not measured:
        return ""
    first = measured[0].open_set
    assert first is not None
    if first.method == "unknown folder":
        method = t("report.open_set.note_folder", images=first.unknown_images, folder=first.source or "")
    else:
        method = t("report.open_set.note_loco")
    best = max(measured, key=lambda m: m.open_set.auroc)  # type: ignore[union-attr]
    o = best.open_set
    assert o is not None and o.auroc is not None
    note = t("report.open_set.note", keep=t.number(100 * o.keep, 0), method=method, model=best.name,
             auroc=t.number(o.auroc, 3),
             accepted=t.number(None if o.unknown_accept_rate is None else 100 * o.unknown_accept_rate, 0))
    return note + _kinds_open_set(study, t)


def _kinds_open_set(study: Study, t: Translator) -> str:
    """A kind's own sentence on its "none of these" rule, keyed by its family (the ensemble's: how it
    was measured, or that leave-one-class-out does not measure it); none for a model without a rule
    (its ``<family>_rejection_seconds`` timing, where a kind times its rule apart, never recorded)."""
    out = ""
    for row in study.models:
        if row.open_set is None and f"{row.family}_rejection_seconds" not in study.timings:
            continue  # not measured, and no rule of its own fitted (an ensemble from before they had one)
        state = "measured" if row.open_set is not None else "not_measured"
        own = t.get(f"report.open_set.{row.family}_{state}", "")
        out += " " + own if own else ""
    return out


# ---- the choice of the served model (issue 25) ---------------------------------------------------

#: At most this many other candidates are named in the choice's sentence (the most accurate ones).
CHOICE_NAMED = 3


def _candidate_accuracy(c: CandidateEvidence, t: Translator) -> str:
    if c.cv_accuracy is not None:
        return t("report.choice.accuracy.cv", accuracy=t.number(c.cv_accuracy, 3), std=t.number(c.cv_accuracy_std, 3),
                 repeats=c.cv_repeats, folds=c.cv_folds, val=t.number(c.val_accuracy, 3), n=c.val_images)
    return t("report.choice.accuracy.val", val=t.number(c.val_accuracy, 3), n=c.val_images)


def _listed(items: list[str], t: Translator) -> str:
    return t("report.choice.list", head=", ".join(items[:-1]), last=items[-1]) if len(items) > 1 else items[0]


def choice_sentence(selection: Selection, t: Translator = EN) -> str:
    """The chosen model and why, in one sentence with its numbers; "" for a run from before the rule
    existed (see also :func:`cannot_reject_sentence`)."""
    chosen = selection.candidate(selection.best)
    if chosen is None:
        return ""
    others = sorted((c for c in selection.candidates if c.name != chosen.name),
                    key=lambda c: -(c.accuracy if c.accuracy is not None else -1.0))
    # Candidates the chosen one does not beat beyond the noise (eligible or not), most accurate first.
    close = [c for c in others if c.difference_low is not None and c.difference_low <= 0.0][:CHOICE_NAMED]
    compare = (t("report.choice.compare.tied", others=_listed(
        [t("report.choice.compare.item", name=c.name, accuracy=t.number(c.accuracy, 3)) for c in close], t))
               if close else t("report.choice.compare.best"))
    keep = t.percent(selection.keep, 0)
    source = selection.strangers_source
    excluded = [c for c in close if not c.eligible]
    decided = selection.decided_by
    if selection.people and selection.can_reject and excluded:
        why = t("report.choice.why.excluded", rate=t.percent(chosen.strangers_accepted, 0), source=source, keep=keep,
                others=_listed([t("report.choice.why.excluded_item", rate=t.percent(c.strangers_accepted, 0),
                                  name=c.name) for c in excluded], t))
    elif decided == "strangers":
        tied = [c for c in others if c.tied][:CHOICE_NAMED]
        why = t("report.choice.why.strangers", rate=t.percent(chosen.strangers_accepted, 0),
                others=_listed([t("report.choice.why.excluded_item", rate=t.percent(c.strangers_accepted, 0),
                                  name=c.name) for c in tied], t))
    elif decided == "parameters":
        tied = [c for c in others if c.tied and c.kind == chosen.kind][:CHOICE_NAMED]
        why = t("report.choice.why.parameters", params=t.localize_number(fmt_params(chosen.parameters)),
                others=_listed([f"{t.localize_number(fmt_params(c.parameters))} ({c.name})" for c in tied], t))
    else:
        why = t(f"report.choice.why.{decided}" if decided in ("simplicity", "order", "only") else
                "report.choice.why.accuracy")
    return t("report.choice.sentence", model=chosen.name, accuracy=_candidate_accuracy(chosen, t),
             compare=compare, why=why)


def cannot_reject_sentence(selection: Selection | None, t: Translator = EN) -> str:
    """For a folder of people whose candidates all accept too many strangers, the sentence that says
    so, on how many strangers, and that the served model will call some of them one of the known
    people; "" otherwise."""
    if selection is None or not selection.people or selection.can_reject is not False:
        return ""
    measured = [c for c in selection.candidates if c.strangers_accepted is not None]
    if not measured:
        return t("report.choice.cannot_reject_unmeasured")
    fewest = min(measured, key=lambda c: c.strangers_accepted)
    return t("report.choice.cannot_reject", source=selection.strangers_source or "–",
             rate=t.percent(fewest.strangers_accepted, 0), strangers=fewest.strangers,
             limit=t.percent(selection.max_strangers, 0))
