"""The schema of ``metrics.json``: what a study found about each model and about the data, typed.

:class:`image_classifier.results.Study` holds these; each is a dataclass read and written by
:mod:`image_classifier.jsonable` (field order is key order; ``json_field`` names a key that
differs from the attribute, or one left out when empty). Reading is lenient where old files
differ: a key they lack takes the field's default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from image_classifier.card import Calibration
from image_classifier.jsonable import Jsonable, json_field


# ---- one model -------------------------------------------------------------------------------


@dataclass
class ClassScores(Jsonable):
    name: str = json_field(key="class")
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(kw_only=True)
class TestMetrics(Jsonable):
    """The scores of one model on the scored images (from ``evaluate.metrics.compute_metrics``).

    A float that was not finite (no JSON for it) reads back as None."""

    n: int
    classes: list[str]
    accuracy: float
    accuracy_ci: tuple[float, float]  # 95 % Wilson score interval
    accuracy_ci_level: float = 0.95
    macro_f1: float
    log_loss: float | None
    ece: float | None
    per_class: list[ClassScores]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted, in ``classes`` order
    reliability: list[dict[str, Any]] = field(default_factory=list)  # ECE bins
    #: The same three before calibration (log_loss, ece and reliability above are the calibrated
    #: probabilities the model serves); None / empty in a metrics.json written before calibration.
    log_loss_uncalibrated: float | None = None
    ece_uncalibrated: float | None = None
    reliability_uncalibrated: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Validation(Jsonable):
    """The model's score on the validation split when training kept it (what selection uses)."""

    accuracy: float | None = None
    loss: float | None = None
    best_epoch: int | None = None


@dataclass
class Training(Jsonable):
    seconds: float | None = None
    peak_rss_mb: float | None = None
    epochs_run: int = field(init=False, default=0)  # len(history), for a person reading the file
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch, from the card

    def __post_init__(self) -> None:
        self.epochs_run = len(self.history)


@dataclass
class Speed(Jsonable):
    """Size and speed on this machine (``evaluate.speed.measure_classifier``); None: not measured."""

    params: int | None = None
    trainable_params: int | None = None
    size_bytes: int | None = None
    size_mb: float | None = None
    flops_per_image: int | None = None
    input_shape: list[int] | None = None
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_repeats: int | None = None
    e2e_latency_ms_p50: float | None = None
    e2e_latency_ms_p95: float | None = None
    e2e_repeats: int | None = None
    #: Whether ``latency_ms_*`` (the forward pass) is all the model computes per image (Model.forward_is_whole);
    #: when False its cost per image is ``e2e_latency_ms_*``. None: not recorded (see ModelResult.from_json).
    forward_is_whole: bool | None = None
    throughput_ips: float | None = None
    throughput_batch: int | None = None
    backend: str | None = None
    backend_description: str | None = None
    torch_threads: int | None = None
    load_avg_1m: float | None = None


@dataclass
class Misclassified(Jsonable):
    """A scored image the model got wrong."""

    path: str
    rel_path: str
    true: str
    predicted: str = json_field(key="pred")
    confidence: float  # the model's probability for ``predicted``
    #: Why it said ``predicted``: a PNG (Grad-CAM overlay, or the deciding face boxed), relative to
    #: the run directory (``explanations/<model>/``); None: not computed (evaluate, older runs).
    overlay: str | None = json_field(default=None, omit="none")


@dataclass
class FaceAccuracy(Jsonable):
    """Test accuracy on the test images with a face and on those without (by the face survey)."""

    test_images_face: int
    test_accuracy_face: float | None
    test_images_noface: int
    test_accuracy_noface: float | None

    @property
    def detection_rate(self) -> float | None:
        total = self.test_images_face + self.test_images_noface
        return self.test_images_face / total if total else None


@dataclass
class ShortcutAudit(Jsonable):
    """``compare``'s shortcut audit of one model on the test split (``evaluate.shortcut``): accuracy
    with every found face masked, with only the faces kept, and in greyscale, against chance."""

    images: int  # test images scored (greyscale uses all that decode: ``greyscale_images``)
    accuracy: float | None  # the model's plain test accuracy on them
    images_with_face: int  # those with a face found: what face_masked and face_only use
    accuracy_with_face: float | None  # plain accuracy on those same images
    no_face: int  # left out of face_masked and face_only: no face found (all, when faces were not looked for)
    face_masked: float | None
    face_only: float | None
    greyscale: float | None
    greyscale_images: int
    chance_uniform: float  # 1 / classes
    chance_majority: float  # the most common class's share of the test images
    faces_looked_for: bool = True
    seconds: float = 0.0

    @property
    def chance(self) -> float:
        """What a model knowing nothing scores: always answering the most common class, or guessing."""
        return max(self.chance_uniform, self.chance_majority)


@dataclass
class OpenSet(Jsonable):
    """"None of these", measured on one model: its rejection rule (fitted on validation) on known
    test images against images of none of its classes.

    ``method`` is ``"unknown folder"`` (``compare --unknown DIR``: the folder's images are the
    unknowns, the known ones are the test split) or ``"leave-one-class-out"`` (no such folder: for
    each class, a head refitted on the other classes' features, its threshold from their validation
    images, the left-out class's test images as the unknowns; the numbers are averaged over classes).
    """

    method: str
    score: str  # the rule's score: max_probability, or p_value (a face model: face distance / max probability)
    keep: float  # the fraction of known validation images the threshold keeps
    auroc: float | None  # known test vs unknown images by the rejection score (1 = perfect, 0.5 = chance)
    unknown_accept_rate: float | None  # unknown images accepted as one of the classes
    known_kept_rate: float | None  # known test images kept (not rejected)
    known_accuracy_kept: float | None  # accuracy on the known test images kept
    known_images: int = 0
    unknown_images: int = 0
    source: str | None = None  # the unknown folder, as given
    seconds: float | None = None  # what measuring it cost


@dataclass
class ExportInfo(Jsonable):
    """Whether ``compare`` exported the model to ONNX, and if not, why."""

    exported: bool
    reason: str = ""  # why not ('' when exported)
    onnx_size_bytes: int | None = None
    estimated_size_bytes: int | None = None  # fp32 weights: what the file would take
    seconds: float = 0.0
    max_abs_diff_vs_torch: float | None = None


@dataclass
class ServeChoice(Jsonable):
    """The backend ``serve --backend auto`` runs the model with, and why."""

    name: str
    reason: str
    provisional: bool = False


@dataclass
class BackendComparison(Jsonable):
    """``compare``'s inference-backend step for one model: each backend's figures (from
    ``inference.timing.measure_backends``: batch-1 medians, speedups, ...), the export, the
    backends left out and why, and what ``serve`` will run."""

    backends: dict[str, dict[str, Any]]
    export: ExportInfo
    skipped: dict[str, str]
    fastest: str
    serve_backend: ServeChoice


@dataclass
class BackendUsed(Jsonable):
    """The backend that computed an ``evaluate`` run's predictions and timings, and why."""

    name: str
    reason: str
    description: str | None = None


@dataclass(kw_only=True)
class ModelResult(Jsonable):
    """One model of a study: how it trained, how it scored, how big and fast it is."""

    name: str
    family: str | None = json_field(default=None, omit="none")  # "cnn" | "face" | "ensemble"; None: read as "cnn"
    model_dir: str  # relative to the run directory for compare, as given for evaluate
    validation: Validation
    test: TestMetrics
    speed: Speed | None = None
    training: Training = field(default_factory=Training)
    errors: list[Misclassified] = field(default_factory=list)
    #: Scored images that could not be read: {rel_path: reason}.
    skipped: dict[str, str] = field(default_factory=dict)
    faces: FaceAccuracy | None = json_field(default=None, omit="none")
    #: compare's, written as keys of the model ("backends", "export", "skipped", ...): the file has one
    #: "skipped" per model, which a compare run (its test images all read by the data check) has
    #: always used for the backends left out.
    backends: BackendComparison | None = json_field(default=None, flatten=True)
    backend: BackendUsed | None = json_field(default=None, omit="none")  # evaluate
    shortcut: ShortcutAudit | None = json_field(default=None, omit="none")  # compare's shortcut audit
    #: Figures, relative to the run directory: "confusion", "curves", "errors".
    plots: dict[str, str] = json_field(default_factory=dict, omit="empty")
    #: The temperature(s) in its card (None: a model saved before calibration, T = 1).
    calibration: Calibration | None = json_field(default=None, omit="none")
    #: "None of these" measured (None: not measured, or a run from before it existed).
    open_set: OpenSet | None = json_field(default=None, omit="none")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelResult:
        result = super().from_json(data)
        if result.backends is not None:
            result.skipped = {}  # the backends', see ``backends``
        if result.speed is not None and result.speed.forward_is_whole is None:
            # A metrics.json written before the field: only a face model's forward pass was known
            # to be a part (its no-face fallback), as the report then assumed.
            result.speed.forward_is_whole = result.family != "face"
        return result


# ---- the data and the machine ------------------------------------------------------------------


@dataclass
class SplitInfo(Jsonable):
    """Which split the models used: its manifest, seed and per-subset class counts."""

    path: str | None = None
    seed: int | None = None
    manifest_sha256: str | None = None
    #: {subset: {class: images}}; an ``evaluate`` without a split has one subset, "evaluated".
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class DuplicateGroup(Jsonable):
    kind: str  # "exact", "near", "exact + near"
    files: list[str]
    subset: str  # where the group went (one subset: the split keeps a group together)


@dataclass
class Duplicates(Jsonable):
    """What the data check found, counted, and each group's subset. ``summary`` and ``policy`` are
    the English sentences ``metrics.json`` keeps; the report writes its own, in its language, from
    the counts (a run saved before the counts were stored has only the sentences)."""

    summary: str
    policy: str
    groups: list[DuplicateGroup] = field(default_factory=list)
    exact_groups: int = 0
    near_pairs: int = 0
    crossing_subsets: int = 0
    exact_files: int | None = None
    near_groups: int | None = None
    images_in_groups: int | None = None
    groups_by_subset: dict[str, int] = field(default_factory=dict)

    @property
    def counted(self) -> bool:
        return self.exact_files is not None and self.near_groups is not None and self.images_in_groups is not None


@dataclass
class FaceSummary(Jsonable):
    """The face survey of the data (``faces.FaceSurvey``): faces per class and who found them."""

    per_class: dict[str, dict[str, int]]  # class -> {"none", "one", "several"}
    images: int
    with_face: int
    detection_rate: float
    methods: dict[str, int]  # detector step -> images whose largest face it found
    seconds: float
    # Photos that probably show someone other than their folder's person (faces.suspects), each
    # with "thumbnail": the face's picture relative to the run directory. None: not looked for.
    suspect_labels: list[dict[str, Any]] | None = None


@dataclass
class DataSummary(Jsonable):
    """The folder the study ran on, what the data check said about it, and the split."""

    root: str
    classes: list[str]
    num_images: int
    unreadable: list[dict[str, str]] = field(default_factory=list)  # [{"path", "reason"}] left out
    split: SplitInfo = field(default_factory=SplitInfo)
    warnings: list[str] = field(default_factory=list)
    duplicates: Duplicates | None = None  # compare's data check
    faces: FaceSummary | None = None  # compare's face survey (None: not run)


@dataclass
class Environment(Jsonable):
    """Where the figures were measured: machine facts and library versions (flat, for the report).
    Keys "machine" and "versions" of metrics.json."""

    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class CandidateEvidence(Jsonable):
    """One candidate of ``compare``'s choice (a model, a face-first cascade or the weighted mix) and
    the evidence it was weighed on (see :mod:`image_classifier.evaluate.choice`)."""

    name: str
    kind: str  # "model", "cascade" or "ensemble"
    description: str
    parameters: int
    val_accuracy: float | None
    val_log_loss: float | None
    val_images: int
    #: Out-of-fold over train + validation (None: not refitted, see ``cv_method``).
    cv_accuracy: float | None = None
    cv_accuracy_std: float | None = None
    cv_log_loss: float | None = None
    cv_log_loss_std: float | None = None
    cv_repeats: int | None = None
    cv_folds: int | None = None
    cv_method: str | None = None
    #: The share of strangers its rule accepts at ``keep`` (None: not measured).
    strangers_accepted: float | None = None
    strangers: int = 0
    eligible: bool = True  # turns away enough strangers (always, when that is not required)
    tied: bool = False  # no eligible candidate is more accurate beyond the noise
    #: The chosen candidate's accuracy minus this one's, with its 95 % paired-bootstrap interval,
    #: on ``difference_evidence`` ("cv" or "val"); None for the chosen one.
    difference: float | None = None
    difference_low: float | None = None
    difference_high: float | None = None
    difference_evidence: str | None = None

    @property
    def accuracy(self) -> float | None:
        """The best estimate of its accuracy: out-of-fold where it has one, else validation."""
        return self.cv_accuracy if self.cv_accuracy is not None else self.val_accuracy


@dataclass
class Selection(Jsonable):
    """Which model the run serves (``best``), by which rule, and why (``reason``, one sentence with
    its numbers). ``candidates`` is the evidence every candidate was weighed on; a folder of people
    also requires turning strangers away (``people``): ``can_reject`` False says no candidate could,
    so the served model calls strangers one of the known people."""

    best: str
    criterion: str = ""
    model_dir: str | None = None  # relative to the run directory
    reason: str = ""
    decided_by: str | None = None  # the step of the rule that decided (evaluate.choice)
    people: bool = False
    can_reject: bool | None = None
    keep: float | None = None  # the rules' kept share of known validation images
    max_strangers: float | None = None
    strangers_source: str = ""  # "leave-one-class-out on validation" or the unknown folder's validation half
    candidates: list[CandidateEvidence] = field(default_factory=list)
    seconds: float | None = None  # the evidence beyond the validation passes, and the choice

    def candidate(self, name: str) -> CandidateEvidence | None:
        return next((c for c in self.candidates if c.name == name), None)


@dataclass
class PairwiseTest(Jsonable):
    """Exact McNemar test of two models on the same images (``evaluate.metrics.pairwise_mcnemar``)."""

    model_a: str
    model_b: str
    a_only_correct: int
    b_only_correct: int
    p_value: float
    p_holm: float | None = None  # Holm-adjusted over all pairs
    significant: bool = False  # p_value < 0.05


# ---- the ensemble (compare) -----------------------------------------------------------------------


@dataclass
class EnsembleMember(Jsonable):
    """One model of a run as a candidate of the ensemble: its weight (0: never chosen) and its own
    validation figures, measured on the same pass as the ensemble's."""

    name: str
    weight: float
    val_log_loss: float | None = None
    val_accuracy: float | None = None
    latency_ms: float | None = None  # its measured single-image latency (what the budget sums)


@dataclass
class EnsembleInfo(Jsonable):
    """``compare``'s ensemble step: greedy selection on the validation split, and what came of it.

    ``outcome``: "kept" (saved as ``model_dir`` and a row named ``name``), "lost" (no mix beat the
    best single model's validation log-loss), "single" (the best mix was one model), or
    "over_budget" (no model fits ``max_latency_ms``)."""

    outcome: str
    members: list[EnsembleMember] = field(default_factory=list)
    steps: int = 0
    val_images: int = 0
    val_log_loss: float | None = None
    val_accuracy: float | None = None
    best_single: str | None = None  # the lowest validation log-loss alone
    best_single_val_log_loss: float | None = None
    best_single_val_accuracy: float | None = None
    max_latency_ms: float | None = None  # --ensemble-max-latency
    member_latency_ms: float | None = None  # the members' latencies summed
    name: str | None = None  # its row in the comparison
    model_dir: str | None = None  # relative to the run directory
    seconds: float = 0.0  # the validation pass and the selection (not the test scoring)

    @property
    def kept(self) -> bool:
        return self.outcome == "kept"

    @property
    def chosen(self) -> list[EnsembleMember]:
        return [m for m in self.members if m.weight > 0]

