"""The whole study in one call: audit, split, train every model, choose the model to serve on the
training and validation images, evaluate on the test split once, measure size and speed, write
the report.

The order of operations is the point of this module:
- every model shares one split (made once, saved as ``split.csv``, reused on re-runs);
- the served model is chosen on the training and validation images only (study.evidence: out-of-fold
  estimates, paired comparisons, strangers turned away for a folder of people); the test split is
  scored once per model, after the choice, and never feeds back into it;
- everything the report says is computed here and returned as a :class:`Study` (``metrics.json``).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import shlex
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from image_classifier.data.check import AuditReport, audit_dataset
from image_classifier.data.options import DEFAULT_FRACTION
from image_classifier.data.split import Split, resolve_split
from image_classifier.errors import DatasetError, ImageClassifierError
from image_classifier.evaluate.evaluation import DecodeCache, Evaluation, LabelledImage
from image_classifier.evaluate.metrics import pairwise_mcnemar
from image_classifier.evaluate.choice import Candidate, choose
from image_classifier.evaluate.rejection import split_unknowns, unknown_images
from image_classifier.evaluate.shortcut import AuditImages, example_strip
from image_classifier.faces import FaceCache, FaceModelsNotFoundError, FaceSurvey, survey_faces
from image_classifier.faces.suspects import suspect_entries
from image_classifier.fileio import atomic_write_text
from image_classifier.i18n import DEFAULT, translator
from image_classifier.optionspec import command_line
from image_classifier.report import write_report
from image_classifier.report.narrative import cannot_reject_sentence, choice_sentence, duplicate_sentences
from image_classifier.report.tables import fmt_seconds, write_metrics_json
from image_classifier.results import (
    CandidateEvidence, DataSummary, DuplicateGroup, Duplicates, FaceSummary, ModelResult, PairwiseTest, Selection,
    SplitInfo, Speed, Study,
)
from image_classifier.runs import (
    PLOTS_DIR, PREDICTIONS_CSV_NAME, SHORTCUT_EXAMPLE_NAME, SPLIT_NAME, SUSPECTS_DIR, model_dir_for, split_of_run,
    write_best_pointer,
)
from image_classifier.saved_model import read_card
from image_classifier.study.backends import measure_model_backends
from image_classifier.inference.loading import load_model
from image_classifier.study.ensemble import (
    EnsembleOutcome, member_latency, mix_info, over_budget, remove_stale, save_and_score,
)
from image_classifier.study.evidence import Evidence, EvidenceInputs, gather_evidence, validation_pass
from image_classifier.study.environment import describe_environment
from image_classifier.study.defaults import FACE_MODEL, SELECTION_CRITERION
from image_classifier.study.options import CompareOptions
from image_classifier.study.scoring import (
    EXPLAIN, OPEN_SET, SHORTCUT_AUDIT, SPEED, TEST, ScoringContext, Stopwatch, face_accuracy, score_model,
)
from image_classifier.study.resume import (
    ModelDecision, check_writable, clear_run, decide, discard_stale_resume, expected_identity, has_previous_run,
    refusal,
)
from image_classifier.device import resolve_device
from image_classifier.training import ImageCache, TrainOptions, TrainResult, resolve_recipe, train_model
from image_classifier.training.launch import train_on_processes
from image_classifier.trust.fit import fit_trust
from image_classifier.trust.rejection import needs_rejection

log = logging.getLogger(__name__)

def reproduce_command(options: CompareOptions, split: Split | None = None) -> str:
    """The explicit command line that redoes this run (``options`` checked), derived from the
    options' declarations (:func:`~image_classifier.optionspec.command_line`).

    A split this run made (or reused) with the run's own seed is reproduced from the data by
    ``--seed/--val/--test``, so the command also works on another machine with the same files; a
    split given with ``--split``, or made earlier with another seed, is named explicitly.
    """
    if options.split is not None or split is None or split.seed != options.seed:
        options = replace(options, split=options.split or options.run_dir / SPLIT_NAME, val=None, test=None)
    else:
        options = replace(options, split=None, val=split.val, test=split.test)
    return shlex.join(["image-classifier", "compare", *command_line(options)])


# ---- steps ---------------------------------------------------------------------------------------

def _eta_text(done_seconds: list[float], remaining: int) -> str:
    if not done_seconds or remaining == 0:
        return ""
    avg = sum(done_seconds) / len(done_seconds)
    return f", rough ETA {fmt_seconds(avg * remaining)} for the other {remaining} (at the average so far)"


def face_survey(options: CompareOptions, audit: AuditReport, face_cache: FaceCache,
                say: Callable[[str], None]) -> tuple[FaceSurvey | None, list[str]]:
    """The face survey of the data (None when switched off or when dlib is not installed), and the
    models to train: ``options.models``, plus the face model for a folder of people when
    ``options.add_people_model``."""
    models = list(options.models or [])
    if not options.faces:
        return None, models
    try:
        survey = survey_faces(audit.records, face_cache, progress=options.progress)
    except FaceModelsNotFoundError as err:
        if FACE_MODEL in models:
            raise
        say(f"warning: no face survey: {err}")
        return None, models
    say(f"faces: {survey.with_face} of {survey.images} images show a face "
        f"({100 * survey.detection_rate:.0f} %), found in {survey.seconds:.0f} s")
    if options.add_people_model and FACE_MODEL not in models:
        if survey.is_face_folder:
            models.append(FACE_MODEL)
            say(f"adding {FACE_MODEL} to the models: {100 * survey.detection_rate:.0f} % of the images show "
                "a face (at least 70 %), so the folder is taken to be photos of people (--models decides)")
        else:
            say(f"not adding {FACE_MODEL}: only {100 * survey.detection_rate:.0f} % of the images show a face "
                f"(it is added from 70 %; --models {FACE_MODEL},... adds it anyway)")
    return survey, models


def _face_summary(survey: FaceSurvey | None, audit: AuditReport, run_dir: Path) -> FaceSummary | None:
    """The survey for metrics.json, with the photos whose faces are probably not their folder's
    person (suspect labels, thumbnails under ``plots/``)."""
    if survey is None:
        return None
    faces = FaceSummary.from_json(survey.to_json())
    faces.suspect_labels = suspect_entries(audit.records, survey.analyses, run_dir / PLOTS_DIR / SUSPECTS_DIR, run_dir)
    return faces


def _write_predictions_csv(path: Path, evaluations: dict[str, Evaluation]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "rel_path", "true", "pred", "confidence", "correct"])
    for name, ev in evaluations.items():
        for p in ev.predictions:
            writer.writerow([name, p.rel_path, p.true, p.predicted, repr(p.confidence), p.correct])
    atomic_write_text(path, buf.getvalue())  # a kill or a full disk never leaves half a file


def _prepare_run_dir(options: CompareOptions, say: Callable[[str], None]) -> None:
    """Check the run directory can be written, and apply --fresh / --resume, before any work."""
    run_dir = options.run_dir
    check_writable(run_dir, [model_dir_for(run_dir, arch) for arch in options.models or []])
    if options.resume == "resume" and not has_previous_run(run_dir):
        raise ImageClassifierError(f"nothing to resume in {run_dir}: no {SPLIT_NAME} and no models (run without --resume)")
    if options.resume == "fresh":
        given = options.split is not None and options.split.resolve() == (run_dir / SPLIT_NAME).resolve()
        removed = clear_run(run_dir, keep_split=given)
        if removed:
            say(f"--fresh: removed {len(removed)} files of the previous run in {run_dir}")


def _plan_models(options: CompareOptions, split: Split) -> dict[str, ModelDecision]:
    """Reuse / resume / train per model; refuses the run when any model there is from another
    configuration (before the split or anything else is written)."""
    def expected(arch: str) -> Callable[[], dict[str, Any]]:
        # Lazy: hashing ImageNet weights is only worth it when there is a model to check.
        return lambda: expected_identity(arch, split, resolve_recipe(arch, options.overrides_for(arch)),
                                         options.seed, options.weights_for(arch))

    decisions = {arch: decide(arch, model_dir_for(options.run_dir, arch), expected(arch))
                 for arch in options.models or []}
    refused = [d for d in decisions.values() if d.action == "refuse"]
    if refused:
        raise refusal(options.run_dir, refused)
    return decisions


def run_compare(options: CompareOptions, *, on_progress: Callable[[str], None] | None = None) -> Study:
    """Run the study; see the module docstring. ``on_progress`` receives one-line status updates."""
    say = on_progress or log.info
    started = time.perf_counter()
    timings: dict[str, float] = {}
    options = options.check()  # every argument is checked before anything is read or written
    run_dir = options.run_dir
    _prepare_run_dir(options, say)

    # 1. Audit and split.
    t0 = time.perf_counter()
    audit = audit_dataset(options.data)
    timings["audit_seconds"] = time.perf_counter() - t0
    for w in audit.warnings:
        say(f"warning: {w}")
    if not audit.usable:
        raise DatasetError("the data cannot be used: " + "; ".join(audit.errors))
    face_cache = FaceCache(options.cache_dir)
    t0 = time.perf_counter()
    survey, models = face_survey(options, audit, face_cache, say)
    options = replace(options, models=models)  # with the face model, if added: the command names it
    timings["face_survey_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    split_path = run_dir / SPLIT_NAME
    split_source = options.split or split_of_run(run_dir)
    if split_source is not None and options.split is None:
        say(f"reusing the split in {split_source} (--fresh starts over with a new split)")
    split = resolve_split(
        options.data, split_source, seed=options.seed,
        val=DEFAULT_FRACTION if options.val is None else options.val,
        test=DEFAULT_FRACTION if options.test is None else options.test,
        audit=audit,
    )
    decisions = _plan_models(options, split)
    if split_source is None or Path(split_source).resolve() != split_path.resolve():
        split.save(split_path)
    timings["split_seconds"] = time.perf_counter() - t0
    test_items = [LabelledImage.from_record(r) for r in split.subset("test")]
    if not test_items:
        raise DatasetError("the split has no test images; use a larger --test fraction or more images")
    say(_split_line(split))

    # 2. Train every model on the same split; right after each, fit its calibration (and rejection
    # rule) on the validation split (trust.fit), before anything chooses or looks at the test split.
    results: dict[str, TrainResult] = {}
    done: list[float] = []
    image_cache = ImageCache(options.cache_dir)
    cache = DecodeCache()  # decoded images shared by every model's validation and test passes
    val_items = [LabelledImage.from_record(r) for r in split.subset("val")]
    trust_seconds = 0.0
    n = len(models)
    to_train = sum(d.action != "reuse" for d in decisions.values())

    for i, arch in enumerate(models, 1):
        decision = decisions[arch]
        model_dir = model_dir_for(run_dir, arch)
        trained = ""
        if decision.action == "reuse":
            say(f"[model {i}/{n}] {decision.line}")
            results[arch] = TrainResult.from_card(model_dir, read_card(model_dir))
            discard_stale_resume(model_dir)
        else:
            say(f"[model {i}/{n}] {decision.line}{_eta_text(done, to_train - len(done))}")
            t0 = time.perf_counter()
            train_options = TrainOptions(
                arch, out=model_dir, seed=options.seed, split=split_path, set=options.overrides_for(arch) or {},
                weights=options.weights_for(arch), resume=decision.action == "resume",
                force=decision.action != "resume", progress=options.progress, keep=options.keep,
                cache=options.cache_dir is not None, cache_dir=options.cache_dir, device=options.device,
            )
            if options.nproc > 1:
                # torchrun runs `image-classifier train`, which also fits calibration and rejection.
                train_on_processes(options.data, train_options, options.nproc)
                results[arch] = TrainResult.from_card(model_dir, read_card(model_dir))
            else:
                results[arch] = train_model(split, train_options, cache=image_cache, face_cache=face_cache)
            done.append(time.perf_counter() - t0)
            trained = f", trained in {done[-1]:.0f} s"
        r = results[arch]
        say(f"[model {i}/{n}] {arch}: validation accuracy {r.best_val_accuracy:.3f} (epoch {r.best_epoch}){trained}")
        # A reused model finished before calibration or its rejection rule existed, or asked for another --keep.
        if r.card.calibration is None or needs_rejection(r.card, options.keep):
            fit = fit_trust(model_dir, val_items, keep=options.keep, cache=cache, face_cache=face_cache)
            say(f"[model {i}/{n}] {arch}: {fit.line()}")
            trust_seconds += fit.seconds
    timings["train_seconds"] = sum(done)
    timings["trust_seconds"] = trust_seconds

    # 3. The evidence on the training and validation images, and the choice of the model to serve
    # (study.evidence): every model's validation pass, out-of-fold estimates where a model refits in
    # seconds, the composites, and for a folder of people the strangers each would accept. The test
    # split is not read before the choice.
    t0 = time.perf_counter()
    people = survey is not None and survey.is_face_folder
    unknown_val = unknowns = None
    if options.unknown is not None:
        # One half chooses (strangers turned away), the other is measured with the test split.
        unknown_val, unknowns = split_unknowns(unknown_images(options.unknown), options.seed)
    train_items = [LabelledImage.from_record(r) for r in split.subset("train")]
    # Leave-one-class-out reads penultimate features (needs two classes left besides the one out).
    loco = options.unknown is None and len(split.classes) >= 3
    passes = {}
    for i, arch in enumerate(models, 1):
        say(f"[model {i}/{n}] {arch}: predicting the {len(val_items)} validation images")
        classifier = load_model(Path(results[arch].model_dir), backend="torch", face_cache=face_cache,
                                device=options.device)
        passes[arch] = validation_pass(classifier, val_items, train_items, cache, tap_features=loco,
                                       unknown=unknown_val if people else None)
    timings["validation_pass_seconds"] = time.perf_counter() - t0
    evidence = gather_evidence(EvidenceInputs(
        models=models, classes=list(split.classes),
        train_records=split.subset("train"), val_records=split.subset("val"), survey=survey, keep=options.keep,
        seed=options.seed, people=people, unknown_val=unknown_val,
        weights={a: options.weights_for(a) for a in models}, cache_dir=options.cache_dir,
        progress=options.progress, composites=options.ensemble), passes, image_cache=image_cache, say=say)
    timings["selection_seconds"] = evidence.seconds
    for c in evidence.candidates:
        say(f"candidate {c.name}: {_evidence_line(c)}")

    # 4. Evaluate on the test split and measure size/speed: each model scored once (study.scoring),
    # with the decoded images, the audit's variants and the unknown images shared by the models.
    t0 = time.perf_counter()
    evaluations: dict[str, Evaluation] = {}
    entries: list[ModelResult] = []
    sample_image = test_items[0].path
    scoring = ScoringContext(
        options=options, say=say, models=n, test_items=test_items, val_items=val_items,
        # The shortcut audit's variants, built once per test image and model input, shared by the models.
        audit_images=(AuditImages(survey.analyses if survey is not None else None, cache)
                      if options.audit else None),
        # "None of these": each model's rule was fitted with its calibration (trust.fit); scoring
        # measures it, on the unknown folder's test half or leave-one-class-out.
        train_items=train_items, unknowns=unknowns, cache=cache, face_cache=face_cache, survey=survey,
    )
    audit_images = scoring.audit_images
    spent = Stopwatch()  # seconds per activity (scoring's keys), over all the models
    for i, arch in enumerate(models, 1):
        scored = score_model(scoring, i, arch, results[arch], passes[arch])
        evaluations[arch] = scored.evaluation
        entries.append(scored.entry)
        spent.add_all(scored.seconds)
    # 4b. Inference backends: export to ONNX and time it against eager PyTorch, per model; the
    # measurement also decides (and records) which backend `serve` runs by default.
    export_seconds = backend_seconds = 0.0
    for i, m in enumerate(entries, 1):
        model_dir = Path(results[m.name].model_dir)
        if options.export:
            say(f"[model {i}/{n}] exporting {m.name} to ONNX and timing PyTorch against ONNX Runtime")
        m.backends, seconds = measure_model_backends(model_dir, m.speed or Speed(), export=options.export,
                                                     sample_image=sample_image, config=options.speed)
        export_seconds += m.backends.export.seconds
        backend_seconds += seconds
        if not m.backends.export.exported:
            say(f"[model {i}/{n}] {m.name}: {m.backends.export.reason}")
        serving = m.backends.serve_backend
        say(f"[model {i}/{n}] {m.name}: serve will use {serving.name} ({serving.reason})")
    # 4c. The composite the choice serves (a cascade or the mix), saved and scored on the test split
    # once. A latency budget (--ensemble-max-latency) is checked against the members' measured
    # latencies: a composite over it is taken out and the choice is made again without it.
    latencies = {m.name: member_latency(m) for m in entries}
    excluded = over_budget(evidence, latencies, options.ensemble_max_latency)
    if excluded:
        kept = [c for c in evidence.candidates if c.name not in excluded]
        evidence.choice = choose(kept, people=evidence.choice.people, seed=options.seed)
        evidence.candidates = kept + [c for c in evidence.candidates if c.name in excluded]
    best = evidence.choice.chosen
    ensemble = EnsembleOutcome()
    composite = evidence.composites.get(best)
    if composite is not None:
        te = time.perf_counter()
        candidate = next(c for c in evidence.candidates if c.name == best)
        ensemble = save_and_score(
            run_dir=run_dir, composite=composite, candidate=candidate,
            model_dirs={a: Path(results[a].model_dir) for a in models}, entries=entries, test_items=test_items,
            cache=cache, speed=options.speed, say=say,
            val_items=evidence.val_items, keep=options.keep, unknowns=unknowns,
            unknown_source=os.fspath(options.unknown) if options.unknown is not None else None,
            device=options.device)
        timings["ensemble_rejection_seconds"] = ensemble.rejection_seconds
        spent.add(OPEN_SET, ensemble.open_set_seconds)
        spent.add(SPEED, ensemble.speed_seconds)
        if ensemble.entry is not None and ensemble.evaluation is not None:
            if survey is not None:
                ensemble.entry.faces = face_accuracy(ensemble.evaluation, survey)
            entries.append(ensemble.entry)
            evaluations[best] = ensemble.evaluation
        timings["ensemble_seconds"] = (time.perf_counter() - te - ensemble.speed_seconds
                                       - ensemble.open_set_seconds)
    else:
        remove_stale(run_dir)
    pairwise = pairwise_mcnemar({name: ev.correct for name, ev in evaluations.items()})
    # Test-split scoring (decode + predict + metrics) and the speed measurements, apart: the first
    # is the cost of evaluating, the second a choice of how many timing repeats to run.
    timings["test_evaluation_seconds"] = spent[TEST]
    if audit_images is not None:
        timings["shortcut_audit_seconds"] = spent[SHORTCUT_AUDIT]
    timings["open_set_seconds"] = spent[OPEN_SET]
    timings["speed_measurement_seconds"] = spent[SPEED]
    timings["explain_seconds"] = spent[EXPLAIN]
    timings["export_seconds"] = export_seconds
    timings["backend_measurement_seconds"] = backend_seconds
    timings["evaluation_seconds"] = time.perf_counter() - t0

    # 5. Write everything.
    best_dir = (run_dir / ensemble.entry.model_dir if composite is not None and ensemble.entry is not None
                else Path(results[best].model_dir))
    write_best_pointer(run_dir, best_dir)
    selection = describe_selection(evidence, options, os.path.relpath(best_dir, run_dir))
    for line in (cannot_reject_sentence(selection), selection.reason):
        if line:
            say(f"selected: {line}")
    _write_predictions_csv(run_dir / PREDICTIONS_CSV_NAME, evaluations)
    study = Study(
        title=translator(DEFAULT)("report.title.compare", data=Path(options.data).name),  # metrics.json's
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=reproduce_command(options, split),
        invoked_as=options.invoked_as,
        data=DataSummary(
            root=os.fspath(options.data), classes=list(split.classes), num_images=len(split.records),
            unreadable=[{"path": u.rel_path, "reason": u.reason} for u in audit.unreadable],
            split=SplitInfo(SPLIT_NAME, options.seed, split.manifest_sha256, _sizes(split)),
            warnings=list(audit.warnings), duplicates=describe_duplicates(audit, split),
            faces=_face_summary(survey, audit, run_dir),
        ),
        environment=describe_environment(resolve_device(options.device)),
        speed_config=options.speed.to_dict(),
        selection=selection,
        models=entries,
        pairwise=[PairwiseTest.from_json(p) for p in pairwise],
        timings=timings,
        ensemble=(mix_info(evidence, latencies, options.ensemble_max_latency, excluded, selection.model_dir)
                  if options.ensemble and len(models) >= 2 else None),
    )

    if audit_images is not None and audit_images.example is not None:
        # One test photo's three variants, so a reader of the report sees what was masked.
        rel = f"{PLOTS_DIR}/{SHORTCUT_EXAMPLE_NAME}"
        example_strip(audit_images.example, run_dir / rel)
        study.plots["shortcut_example"] = rel
    files = write_report(study, run_dir, lang=options.lang,
                         title=translator(options.lang)("report.title.compare", data=Path(options.data).name))
    timings["total_seconds"] = time.perf_counter() - started
    # metrics.json was written by write_report; rewrite it so it includes the total.
    write_metrics_json(study, files.metrics_json)
    return study


# ---- the choice, as the report keeps it ------------------------------------------------------------

def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _evidence_line(c: Candidate) -> str:
    """One progress line of a candidate's evidence."""
    parts = [f"validation accuracy {c.val_accuracy:.3f} ({int(c.val_correct.sum())}/{len(c.val_correct)})"]
    if c.cv is not None:
        parts.append(f"{c.cv.repeats}x{c.cv.folds} folds {c.cv.accuracy:.3f} ± {c.cv.accuracy_std:.3f}")
    if c.strangers_rate is not None:
        parts.append(f"strangers accepted {100 * c.strangers_rate:.0f} % of {len(c.strangers_accepted)}")  # type: ignore[arg-type]
    return "; ".join(parts)


def describe_selection(evidence: Evidence, options: CompareOptions, model_dir: str) -> Selection:
    """The run's :class:`Selection`: the choice, every candidate's evidence, and the sentence that says why."""
    choice = evidence.choice
    differences = {d.b: d for d in choice.accuracy_differences}
    rows = []
    for c in evidence.candidates:
        d, cv = differences.get(c.name), c.cv
        rows.append(CandidateEvidence(
            name=c.name, kind=c.kind, description=c.description, parameters=c.parameters,
            val_accuracy=_finite(c.val_accuracy), val_log_loss=_finite(c.val_log_loss), val_images=len(c.val_correct),
            cv_accuracy=cv.accuracy if cv else None, cv_accuracy_std=cv.accuracy_std if cv else None,
            cv_log_loss=cv.log_loss if cv else None, cv_log_loss_std=cv.log_loss_std if cv else None,
            cv_repeats=cv.repeats if cv else None, cv_folds=cv.folds if cv else None, cv_method=cv.method if cv else None,
            strangers_accepted=c.strangers_rate,
            strangers=0 if c.strangers_accepted is None else len(c.strangers_accepted),
            eligible=c.name in choice.eligible, tied=c.name in choice.tied,
            difference=_finite(d.estimate) if d else None, difference_low=_finite(d.low) if d else None,
            difference_high=_finite(d.high) if d else None, difference_evidence=d.evidence if d else None))
    selection = Selection(
        best=choice.chosen, criterion=SELECTION_CRITERION, model_dir=model_dir, decided_by=choice.decided_by,
        people=choice.people, can_reject=choice.can_reject, keep=options.keep, max_strangers=choice.max_strangers,
        strangers_source=evidence.strangers, candidates=rows, seconds=round(evidence.seconds, 3))
    selection.reason = choice_sentence(selection)
    return selection


# ---- adapters to the data layer's reports --------------------------------------------------------

def _sizes(split: Split) -> dict[str, dict[str, int]]:
    sizes = split.sizes()
    return {subset: {str(c): int(n) for c, n in per_class.items()} for subset, per_class in sizes.items()}


def _split_line(split: Split) -> str:
    sizes = _sizes(split)
    parts = [f"{subset} {sum(v.values())}" for subset, v in sizes.items()]
    return f"split: {', '.join(parts)} images; {len(split.classes)} classes"


def describe_duplicates(audit: AuditReport, split: Split) -> Duplicates:
    """What the audit found and where each duplicate group went, for the report."""
    exact = [list(g) for g in audit.exact_duplicate_groups]
    near = [list(g) for g in audit.near_duplicate_groups]
    in_exact = {p for g in exact for p in g}
    in_near = {p for g in near for p in g}
    summary = split.group_summary()
    groups = []
    for records in split.groups().values():
        files = sorted(r.rel_path for r in records)
        kinds = [k for k, members in (("exact", in_exact), ("near", in_near)) if any(f in members for f in files)]
        subsets = sorted({r.subset for r in records})
        groups.append(DuplicateGroup(" + ".join(kinds) or "duplicate", files, ", ".join(subsets)))
    groups.sort(key=lambda g: g.files[0])
    dups = Duplicates("", "", groups, exact_groups=len(exact), near_pairs=len(audit.near_duplicate_pairs),
                      crossing_subsets=summary.get("groups_crossing_subsets", 0),
                      exact_files=sum(len(g) for g in exact), near_groups=len(near),
                      images_in_groups=summary.get("images_in_groups", 0),
                      groups_by_subset=dict(summary.get("by_subset", {})))
    # metrics.json keeps the English sentences; the report writes them in its own language.
    dups.summary, dups.policy = duplicate_sentences(dups)
    return dups
