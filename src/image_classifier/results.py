"""What a study found, typed: :class:`Study` (one ``compare`` or ``evaluate`` run) and its
:class:`ModelResult` per model, with the data, split, environment and significance tests.

A run's ``metrics.json`` is :meth:`Study.to_json`, and :meth:`Study.load` reads it back, so the
report, ``comparison.csv``, the terminal table, ``serve`` and a notebook all read one structure.
The JSON keys are those the files have always had; a field's docstring or comment names its key
where the two differ.

In a notebook, a :class:`Study` shows its table and figures (:meth:`Study._repr_html_`);
:attr:`Study.table`, :meth:`Study.confusion` and :meth:`Study.errors` are pandas DataFrames when
pandas is installed (it is not a dependency), else plain lists and dicts.

This module sits below ``report`` and ``study`` (both use it) and imports only the bottom layer.
"""
from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from image_classifier.errors import ModelFormatError
from image_classifier.runs import METRICS_NAME, REPORT_HTML_NAME, read_metrics

_UNLOADED: Any = object()
#: pandas (optional: the tables are DataFrames when it is installed, lists of dicts otherwise), imported
#: on first use by :func:`_pandas`: ``image-classifier --help`` imports this module, and importing pandas
#: here made it take 0.47 s instead of 0.1 s (2-core development machine, median of 5).
pandas: Any = _UNLOADED


def _pandas() -> Any:
    """The pandas module, or None when it is not installed."""
    global pandas
    if pandas is _UNLOADED:
        try:
            import pandas as module
        except ImportError:  # pragma: no cover - depends on the environment
            module = None
        pandas = module
    return pandas

#: What the scored images of a compare run are called (``evaluate`` may score other images).
TEST_IMAGES = "test images"

#: ``comparison.csv`` columns (and :attr:`Study.table`'s), in order. The first 13 are the ones the
#: study's question needs; the rest add context.
COLUMNS = (
    "model",
    "test_accuracy",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "macro_f1",
    "log_loss",
    "ece",
    # log_loss and ece are those of the calibrated probabilities (what the model serves); these are
    # before calibration, with the temperature fitted on the validation split (empty: none).
    "log_loss_uncalibrated",
    "ece_uncalibrated",
    "temperature",
    "params",
    "size_mb",
    "latency_ms_p50",
    "latency_ms_p95",
    "throughput_ips",
    "train_seconds",
    "test_n",
    "val_accuracy",
    "val_loss",
    "best_epoch",
    "trainable_params",
    "gflops_per_image",
    "e2e_latency_ms_p50",
    "e2e_latency_ms_p95",
    "peak_rss_mb",
    "selected",
    # Inference backends (``compare``): ONNX Runtime timed against eager PyTorch in the same rounds;
    # empty when the model was not exported.
    "onnx_latency_ms_p50",
    "onnx_e2e_latency_ms_p50",
    "onnx_throughput_ips",
    "onnx_speedup",
    "serve_backend",
    # Photos of people (``compare`` with the face survey on): test accuracy on the test images in
    # which a face was found and on the others, and the share of test images with a face.
    "test_accuracy_face",
    "test_accuracy_noface",
    "face_detection_rate",
    # "cnn", or "face" for a face model, whose latency_ms_* are those of its no-face fallback network
    # alone (see report.tables.per_image_ms), or "ensemble" for compare's ensemble (every member's
    # forward pass; size and parameters are the members' sums).
    "family",
    # The shortcut audit (``compare``): test accuracy with the faces masked, with only the faces
    # kept (both on the test images with a face found), and in greyscale.
    "acc_face_masked",
    "acc_face_only",
    "acc_greyscale",
    # "None of these" (open-set rejection, see OpenSet): AUROC of the rejection score, known test images
    # against unknown ones; the share of unknown images accepted as a class at the validation
    # threshold; accuracy on the known test images the rule keeps, and the share it keeps.
    "unknown_auroc",
    "unknown_accept_rate",
    "known_accuracy_kept",
    "known_kept_rate",
    "unknown_method",
    # The choice of the served model (compare; evaluate.choice), on the training and validation
    # images only: out-of-fold accuracy and log-loss over train + validation for a model refitted in
    # seconds (mean and standard deviation over repeats x folds, e.g. "5x2"), the share of strangers
    # its rule accepts on validation (a folder of people), and whether no eligible candidate is more
    # accurate beyond the noise ("tied": it was among those the rule chose from).
    "cv_accuracy",
    "cv_accuracy_std",
    "cv_log_loss",
    "cv_folds",
    "val_strangers_accepted",
    "tied",
)

#: The columns a notebook shows (:meth:`Study._repr_html_`); the table has them all.
NOTEBOOK_COLUMNS = ("model", "val_accuracy", "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high",
                    "macro_f1", "params", "size_mb", "latency_ms_p50", "train_seconds", "selected")


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


# ---- one model -------------------------------------------------------------------------------

@dataclass
class ClassScores:
    name: str  # key "class"
    precision: float
    recall: float
    f1: float
    support: int

    def to_json(self) -> dict[str, Any]:
        return {"class": self.name, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "support": self.support}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClassScores:
        return cls(str(d["class"]), d["precision"], d["recall"], d["f1"], int(d["support"]))


@dataclass
class TestMetrics:
    """The scores of one model on the scored images (from ``evaluate.metrics.compute_metrics``).

    A float that was not finite (no JSON for it) reads back as None."""

    n: int
    classes: list[str]
    accuracy: float
    accuracy_ci: tuple[float, float]  # 95 % percentile bootstrap interval
    macro_f1: float
    log_loss: float | None
    ece: float | None
    per_class: list[ClassScores]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted, in ``classes`` order
    reliability: list[dict[str, Any]] = field(default_factory=list)  # ECE bins
    accuracy_ci_level: float = 0.95
    #: The same three before calibration (log_loss, ece and reliability above are the calibrated
    #: probabilities the model serves); None / empty in a metrics.json written before calibration.
    log_loss_uncalibrated: float | None = None
    ece_uncalibrated: float | None = None
    reliability_uncalibrated: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "classes": list(self.classes), "accuracy": self.accuracy,
                "accuracy_ci": list(self.accuracy_ci), "accuracy_ci_level": self.accuracy_ci_level,
                "macro_f1": self.macro_f1, "log_loss": self.log_loss, "ece": self.ece,
                "per_class": [c.to_json() for c in self.per_class], "confusion_matrix": self.confusion_matrix,
                "reliability": self.reliability,
                "log_loss_uncalibrated": self.log_loss_uncalibrated, "ece_uncalibrated": self.ece_uncalibrated,
                "reliability_uncalibrated": self.reliability_uncalibrated}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TestMetrics:
        low, high = d["accuracy_ci"]
        return cls(n=int(d["n"]), classes=[str(c) for c in d["classes"]], accuracy=float(d["accuracy"]),
                   accuracy_ci=(float(low), float(high)), macro_f1=float(d["macro_f1"]),
                   log_loss=_float(d.get("log_loss")), ece=_float(d.get("ece")),
                   per_class=[ClassScores.from_json(c) for c in d.get("per_class") or []],
                   confusion_matrix=[[int(v) for v in row] for row in d["confusion_matrix"]],
                   reliability=list(d.get("reliability") or []),
                   accuracy_ci_level=float(d.get("accuracy_ci_level", 0.95)),
                   log_loss_uncalibrated=_float(d.get("log_loss_uncalibrated")),
                   ece_uncalibrated=_float(d.get("ece_uncalibrated")),
                   reliability_uncalibrated=list(d.get("reliability_uncalibrated") or []))


@dataclass
class Calibration:
    """The temperature(s) fitted on the validation split (the card's ``calibration``), with the
    validation NLL and ECE before and after. The test-split figures are in :class:`TestMetrics`."""

    temperature: float = 1.0
    face_temperature: float | None = None  # a face model's face head
    images: int = 0
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why a temperature was kept at 1

    def to_json(self) -> dict[str, Any]:
        return {"method": "temperature", "temperature": self.temperature, "face_temperature": self.face_temperature,
                "fitted_on": "validation", "images": self.images, "nll_before": self.nll_before,
                "nll_after": self.nll_after, "ece_before": self.ece_before, "ece_after": self.ece_after,
                "notes": list(self.notes)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        return cls(temperature=float(d.get("temperature") or 1.0), face_temperature=_float(d.get("face_temperature")),
                   images=int(d.get("images") or 0), nll_before=_float(d.get("nll_before")),
                   nll_after=_float(d.get("nll_after")), ece_before=_float(d.get("ece_before")),
                   ece_after=_float(d.get("ece_after")), notes=[str(n) for n in d.get("notes") or []])


@dataclass
class Validation:
    """The model's score on the validation split when training kept it (what selection uses)."""

    accuracy: float | None = None
    loss: float | None = None
    best_epoch: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "loss": self.loss, "best_epoch": self.best_epoch}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Validation:
        d = d or {}
        return cls(_float(d.get("accuracy")), _float(d.get("loss")), _int(d.get("best_epoch")))


@dataclass
class Training:
    seconds: float | None = None
    peak_rss_mb: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch, from the card

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "peak_rss_mb": self.peak_rss_mb, "epochs_run": self.epochs_run,
                "history": list(self.history)}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Training:
        d = d or {}
        return cls(_float(d.get("seconds")), _float(d.get("peak_rss_mb")), list(d.get("history") or []))


@dataclass
class Speed:
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
    throughput_ips: float | None = None
    throughput_batch: int | None = None
    backend: str | None = None
    backend_description: str | None = None
    torch_threads: int | None = None
    load_avg_1m: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Speed:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Misclassified:
    """A scored image the model got wrong."""

    path: str
    rel_path: str
    true: str
    predicted: str  # key "pred"
    confidence: float  # the model's probability for ``predicted``
    #: Why it said ``predicted``: a PNG (Grad-CAM overlay, or the deciding face boxed), relative to
    #: the run directory (``explanations/<model>/``); None: not computed (evaluate, older runs).
    overlay: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "rel_path": self.rel_path, "true": self.true, "pred": self.predicted,
                             "confidence": self.confidence}
        if self.overlay is not None:
            d["overlay"] = self.overlay
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Misclassified:
        return cls(str(d["path"]), str(d.get("rel_path") or d["path"]), str(d["true"]), str(d["pred"]),
                   float(d["confidence"]), d.get("overlay"))


@dataclass
class FaceAccuracy:
    """Test accuracy on the test images with a face and on those without (by the face survey)."""

    test_images_face: int
    test_accuracy_face: float | None
    test_images_noface: int
    test_accuracy_noface: float | None

    @property
    def detection_rate(self) -> float | None:
        total = self.test_images_face + self.test_images_noface
        return self.test_images_face / total if total else None

    def to_json(self) -> dict[str, Any]:
        return {"test_images_face": self.test_images_face, "test_accuracy_face": self.test_accuracy_face,
                "test_images_noface": self.test_images_noface, "test_accuracy_noface": self.test_accuracy_noface}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FaceAccuracy:
        return cls(int(d["test_images_face"]), _float(d.get("test_accuracy_face")), int(d["test_images_noface"]),
                   _float(d.get("test_accuracy_noface")))


@dataclass
class ShortcutAudit:
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

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ShortcutAudit:
        return cls(int(d["images"]), _float(d.get("accuracy")), int(d.get("images_with_face") or 0),
                   _float(d.get("accuracy_with_face")), int(d.get("no_face") or 0), _float(d.get("face_masked")),
                   _float(d.get("face_only")), _float(d.get("greyscale")), int(d.get("greyscale_images") or 0),
                   float(d.get("chance_uniform") or 0.0), float(d.get("chance_majority") or 0.0),
                   bool(d.get("faces_looked_for", True)), float(d.get("seconds") or 0.0))


@dataclass
class OpenSet:
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

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "score": self.score, "keep": self.keep, "auroc": self.auroc,
                "unknown_accept_rate": self.unknown_accept_rate, "known_kept_rate": self.known_kept_rate,
                "known_accuracy_kept": self.known_accuracy_kept, "known_images": self.known_images,
                "unknown_images": self.unknown_images, "source": self.source, "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OpenSet:
        return cls(str(d["method"]), str(d.get("score") or ""), float(d.get("keep") or 0.0), _float(d.get("auroc")),
                   _float(d.get("unknown_accept_rate")), _float(d.get("known_kept_rate")),
                   _float(d.get("known_accuracy_kept")), int(d.get("known_images") or 0),
                   int(d.get("unknown_images") or 0), d.get("source"), _float(d.get("seconds")))


@dataclass
class ExportInfo:
    """Whether ``compare`` exported the model to ONNX, and if not, why."""

    exported: bool
    reason: str = ""  # why not ('' when exported)
    onnx_size_bytes: int | None = None
    estimated_size_bytes: int | None = None  # fp32 weights: what the file would take
    seconds: float = 0.0
    max_abs_diff_vs_torch: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExportInfo:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class ServeChoice:
    """The backend ``serve --backend auto`` runs the model with, and why."""

    name: str
    reason: str
    provisional: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason, "provisional": self.provisional}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ServeChoice:
        return cls(str(d["name"]), str(d.get("reason", "")), bool(d.get("provisional", False)))


@dataclass
class BackendComparison:
    """``compare``'s inference-backend step for one model: each backend's figures (from
    ``inference.timing.measure_backends``: batch-1 medians, speedups, ...), the export, the
    backends left out and why, and what ``serve`` will run."""

    backends: dict[str, dict[str, Any]]
    export: ExportInfo
    skipped: dict[str, str]
    fastest: str
    serve_backend: ServeChoice

    def to_json(self) -> dict[str, Any]:
        return {"backends": self.backends, "export": self.export.to_json(), "skipped": dict(self.skipped),
                "fastest": self.fastest, "serve_backend": self.serve_backend.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackendComparison:
        return cls(dict(d["backends"]), ExportInfo.from_json(d.get("export") or {"exported": False}),
                   dict(d.get("skipped") or {}), str(d.get("fastest") or ""),
                   ServeChoice.from_json(d.get("serve_backend") or {"name": "torch", "reason": ""}))


@dataclass
class BackendUsed:
    """The backend that computed an ``evaluate`` run's predictions and timings, and why."""

    name: str
    reason: str
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason, "description": self.description}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackendUsed:
        return cls(str(d["name"]), str(d.get("reason", "")), d.get("description"))


@dataclass
class ModelResult:
    """One model of a study: how it trained, how it scored, how big and fast it is."""

    name: str
    model_dir: str  # relative to the run directory for compare, as given for evaluate
    validation: Validation
    test: TestMetrics
    errors: list[Misclassified] = field(default_factory=list)
    speed: Speed | None = None
    training: Training = field(default_factory=Training)
    family: str | None = None  # "cnn" | "face" | "ensemble"; None: not recorded (read as "cnn")
    #: Scored images that could not be read: {rel_path: reason}.
    skipped: dict[str, str] = field(default_factory=dict)
    faces: FaceAccuracy | None = None
    backends: BackendComparison | None = None  # compare
    backend: BackendUsed | None = None  # evaluate
    shortcut: ShortcutAudit | None = None  # compare's shortcut audit (None: not run)
    #: Figures, relative to the run directory: "confusion", "curves", "errors".
    plots: dict[str, str] = field(default_factory=dict)
    #: The temperature(s) in its card (None: a model saved before calibration, T = 1).
    calibration: Calibration | None = None
    #: "None of these" measured (None: not measured, or a run from before it existed).
    open_set: OpenSet | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.family is not None:
            d["family"] = self.family
        d.update(model_dir=self.model_dir, validation=self.validation.to_json(), test=self.test.to_json(),
                 speed=self.speed.to_json() if self.speed is not None else None, training=self.training.to_json(),
                 errors=[e.to_json() for e in self.errors], skipped=dict(self.skipped))
        if self.faces is not None:
            d["faces"] = self.faces.to_json()
        if self.backends is not None:
            # The file has one "skipped" key per model; a compare run, whose test images were all read
            # by the data check, has always used it for the backends left out.
            d.update(self.backends.to_json())
        if self.backend is not None:
            d["backend"] = self.backend.to_json()
        if self.shortcut is not None:
            d["shortcut"] = self.shortcut.to_json()
        if self.plots:
            d["plots"] = dict(self.plots)
        if self.calibration is not None:
            d["calibration"] = self.calibration.to_json()
        if self.open_set is not None:
            d["open_set"] = self.open_set.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelResult:
        backends = BackendComparison.from_json(d) if isinstance(d.get("backends"), dict) else None
        return cls(
            name=str(d["name"]), model_dir=str(d.get("model_dir") or ""),
            validation=Validation.from_json(d.get("validation")), test=TestMetrics.from_json(d["test"]),
            errors=[Misclassified.from_json(e) for e in d.get("errors") or []],
            speed=Speed.from_json(d["speed"]) if d.get("speed") else None,
            training=Training.from_json(d.get("training")), family=d.get("family"),
            skipped={} if backends is not None else dict(d.get("skipped") or {}),
            faces=FaceAccuracy.from_json(d["faces"]) if d.get("faces") else None, backends=backends,
            backend=BackendUsed.from_json(d["backend"]) if d.get("backend") else None,
            shortcut=ShortcutAudit.from_json(d["shortcut"]) if d.get("shortcut") else None,
            plots=dict(d.get("plots") or {}),
            calibration=Calibration.from_json(d["calibration"]) if d.get("calibration") else None,
            open_set=OpenSet.from_json(d["open_set"]) if d.get("open_set") else None,
        )

    def row(self, selected: bool = False, evidence: CandidateEvidence | None = None) -> dict[str, Any]:
        """This model's row of the comparison table: keys = :data:`COLUMNS`, numbers unrounded
        (``evidence``: its candidate's in the run's choice, when it was one)."""
        test, speed, val, training = self.test, self.speed or Speed(), self.validation, self.training
        ev = evidence
        onnx = (self.backends.backends.get("onnx") if self.backends else None) or {}
        faces = self.faces
        return {
            "model": self.name,
            "test_accuracy": test.accuracy,
            "test_accuracy_ci_low": test.accuracy_ci[0],
            "test_accuracy_ci_high": test.accuracy_ci[1],
            "macro_f1": test.macro_f1,
            "log_loss": test.log_loss,
            "ece": test.ece,
            "log_loss_uncalibrated": test.log_loss_uncalibrated,
            "ece_uncalibrated": test.ece_uncalibrated,
            "temperature": self.calibration.temperature if self.calibration else None,
            "params": speed.params,
            "size_mb": speed.size_mb,
            "latency_ms_p50": speed.latency_ms_p50,
            "latency_ms_p95": speed.latency_ms_p95,
            "throughput_ips": speed.throughput_ips,
            "train_seconds": training.seconds,
            "test_n": test.n,
            "val_accuracy": val.accuracy,
            "val_loss": val.loss,
            "best_epoch": val.best_epoch,
            "trainable_params": speed.trainable_params,
            "gflops_per_image": speed.flops_per_image / 1e9 if speed.flops_per_image is not None else None,
            "e2e_latency_ms_p50": speed.e2e_latency_ms_p50,
            "e2e_latency_ms_p95": speed.e2e_latency_ms_p95,
            "peak_rss_mb": training.peak_rss_mb,
            "selected": selected,
            "onnx_latency_ms_p50": onnx.get("latency_ms_p50"),
            "onnx_e2e_latency_ms_p50": onnx.get("e2e_latency_ms_p50"),
            "onnx_throughput_ips": onnx.get("throughput_ips"),
            "onnx_speedup": onnx.get("speedup_latency"),
            "serve_backend": self.backends.serve_backend.name if self.backends else None,
            "test_accuracy_face": faces.test_accuracy_face if faces else None,
            "test_accuracy_noface": faces.test_accuracy_noface if faces else None,
            "face_detection_rate": faces.detection_rate if faces else None,
            "family": self.family or "cnn",
            "acc_face_masked": self.shortcut.face_masked if self.shortcut else None,
            "acc_face_only": self.shortcut.face_only if self.shortcut else None,
            "acc_greyscale": self.shortcut.greyscale if self.shortcut else None,
            "unknown_auroc": self.open_set.auroc if self.open_set else None,
            "unknown_accept_rate": self.open_set.unknown_accept_rate if self.open_set else None,
            "known_accuracy_kept": self.open_set.known_accuracy_kept if self.open_set else None,
            "known_kept_rate": self.open_set.known_kept_rate if self.open_set else None,
            "unknown_method": self.open_set.method if self.open_set else None,
            "cv_accuracy": ev.cv_accuracy if ev else None,
            "cv_accuracy_std": ev.cv_accuracy_std if ev else None,
            "cv_log_loss": ev.cv_log_loss if ev else None,
            "cv_folds": f"{ev.cv_repeats}x{ev.cv_folds}" if ev and ev.cv_repeats else None,
            "val_strangers_accepted": ev.strangers_accepted if ev else None,
            "tied": ev.tied if ev else None,
        }


# ---- the data and the machine ------------------------------------------------------------------

@dataclass
class SplitInfo:
    """Which split the models used: its manifest, seed and per-subset class counts."""

    path: str | None = None
    seed: int | None = None
    manifest_sha256: str | None = None
    #: {subset: {class: images}}; an ``evaluate`` without a split has one subset, "evaluated".
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "seed": self.seed, "manifest_sha256": self.manifest_sha256, "sizes": self.sizes}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> SplitInfo:
        d = d or {}
        return cls(d.get("path"), _int(d.get("seed")), d.get("manifest_sha256"),
                   {s: {str(c): int(n) for c, n in v.items()} for s, v in (d.get("sizes") or {}).items()})


@dataclass
class DuplicateGroup:
    kind: str  # "exact", "near", "exact + near"
    files: list[str]
    subset: str  # where the group went (one subset: the split keeps a group together)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": list(self.files), "subset": self.subset}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DuplicateGroup:
        return cls(str(d.get("kind", "")), [str(f) for f in d.get("files") or []], str(d.get("subset", "")))


@dataclass
class Duplicates:
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

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary, "policy": self.policy, "groups": [g.to_json() for g in self.groups],
                "exact_groups": self.exact_groups, "near_pairs": self.near_pairs,
                "crossing_subsets": self.crossing_subsets, "exact_files": self.exact_files,
                "near_groups": self.near_groups, "images_in_groups": self.images_in_groups,
                "groups_by_subset": dict(self.groups_by_subset)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Duplicates:
        return cls(str(d.get("summary", "")), str(d.get("policy", "")),
                   [DuplicateGroup.from_json(g) for g in d.get("groups") or []], int(d.get("exact_groups", 0)),
                   int(d.get("near_pairs", 0)), int(d.get("crossing_subsets", 0)), _int(d.get("exact_files")),
                   _int(d.get("near_groups")), _int(d.get("images_in_groups")),
                   {str(k): int(v) for k, v in (d.get("groups_by_subset") or {}).items()})


@dataclass
class FaceSummary:
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

    def to_json(self) -> dict[str, Any]:
        return {"per_class": self.per_class, "images": self.images, "with_face": self.with_face,
                "detection_rate": self.detection_rate, "methods": self.methods, "seconds": self.seconds,
                "suspect_labels": self.suspect_labels}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FaceSummary:
        suspects = d.get("suspect_labels")
        return cls(dict(d["per_class"]), int(d["images"]), int(d["with_face"]), float(d["detection_rate"]),
                   dict(d.get("methods") or {}), float(d.get("seconds", 0.0)),
                   None if suspects is None else [dict(e) for e in suspects])


@dataclass
class DataSummary:
    """The folder the study ran on, what the data check said about it, and the split."""

    root: str
    classes: list[str]
    num_images: int
    split: SplitInfo = field(default_factory=SplitInfo)
    warnings: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)  # [{"path", "reason"}] left out
    duplicates: Duplicates | None = None  # compare's data check
    faces: FaceSummary | None = None  # compare's face survey (None: not run)

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "classes": list(self.classes), "num_images": self.num_images,
                "unreadable": list(self.unreadable), "split": self.split.to_json(), "warnings": list(self.warnings),
                "duplicates": self.duplicates.to_json() if self.duplicates is not None else None,
                "faces": self.faces.to_json() if self.faces is not None else None}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> DataSummary:
        d = d or {}
        return cls(str(d.get("root", "")), [str(c) for c in d.get("classes") or []], int(d.get("num_images") or 0),
                   SplitInfo.from_json(d.get("split")), [str(w) for w in d.get("warnings") or []],
                   list(d.get("unreadable") or []),
                   Duplicates.from_json(d["duplicates"]) if d.get("duplicates") else None,
                   FaceSummary.from_json(d["faces"]) if d.get("faces") else None)


@dataclass
class Environment:
    """Where the figures were measured: machine facts and library versions (flat, for the report).
    Keys "machine" and "versions" of metrics.json."""

    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class CandidateEvidence:
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

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CandidateEvidence:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Selection:
    """Which model the run serves (``best``), by which rule, and why (``reason``, one sentence with
    its numbers). ``candidates`` is the evidence every candidate was weighed on; a folder of people
    also requires turning strangers away (``people``): ``can_reject`` False says no candidate could,
    so the served model calls strangers one of the known people."""

    best: str
    criterion: str
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

    def to_json(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["candidates"] = [c.to_json() for c in self.candidates]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Selection:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "candidates"}
        fields.setdefault("criterion", "")
        return cls(**{**fields, "best": str(d["best"])},
                   candidates=[CandidateEvidence.from_json(c) for c in d.get("candidates") or []])

    def candidate(self, name: str) -> CandidateEvidence | None:
        return next((c for c in self.candidates if c.name == name), None)


@dataclass
class PairwiseTest:
    """Exact McNemar test of two models on the same images (``evaluate.metrics.pairwise_mcnemar``)."""

    model_a: str
    model_b: str
    a_only_correct: int
    b_only_correct: int
    p_value: float
    p_holm: float | None = None  # Holm-adjusted over all pairs
    significant: bool = False  # p_value < 0.05

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PairwiseTest:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# ---- the ensemble (compare) -----------------------------------------------------------------------

@dataclass
class EnsembleMember:
    """One model of a run as a candidate of the ensemble: its weight (0: never chosen) and its own
    validation figures, measured on the same pass as the ensemble's."""

    name: str
    weight: float
    val_log_loss: float | None = None
    val_accuracy: float | None = None
    latency_ms: float | None = None  # its measured single-image latency (what the budget sums)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EnsembleMember:
        return cls(str(d["name"]), float(d["weight"]), _float(d.get("val_log_loss")), _float(d.get("val_accuracy")),
                   _float(d.get("latency_ms")))


#: :attr:`EnsembleInfo.outcome` values: kept (a row of the comparison), or why not.
ENSEMBLE_OUTCOMES = ("kept", "lost", "single", "over_budget")


@dataclass
class EnsembleInfo:
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

    def to_json(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["members"] = [m.to_json() for m in self.members]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EnsembleInfo:
        return cls(
            outcome=str(d.get("outcome") or "lost"), members=[EnsembleMember.from_json(m) for m in d.get("members") or []],
            steps=int(d.get("steps") or 0), val_images=int(d.get("val_images") or 0),
            val_log_loss=_float(d.get("val_log_loss")), val_accuracy=_float(d.get("val_accuracy")),
            best_single=d.get("best_single"), best_single_val_log_loss=_float(d.get("best_single_val_log_loss")),
            best_single_val_accuracy=_float(d.get("best_single_val_accuracy")),
            max_latency_ms=_float(d.get("max_latency_ms")), member_latency_ms=_float(d.get("member_latency_ms")),
            name=d.get("name"), model_dir=d.get("model_dir"), seconds=float(d.get("seconds") or 0.0),
        )


# ---- the study -----------------------------------------------------------------------------------

@dataclass
class Study:
    """One ``compare`` (several models, one selected on validation) or ``evaluate`` (one model) run.

    ``run_dir`` is where its files are (not part of ``metrics.json``)."""

    title: str
    data: DataSummary
    models: list[ModelResult]
    created_utc: str = ""
    command: str = ""  # the explicit command line that redoes the run
    invoked_as: str = ""
    scored_set: str = TEST_IMAGES  # what the scored images are called
    environment: Environment = field(default_factory=Environment)
    speed_config: dict[str, Any] | None = None  # evaluate.speed.SpeedConfig's repeat counts
    selection: Selection | None = None  # compare only
    pairwise: list[PairwiseTest] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # shown first (e.g. "these images were trained on")
    timings: dict[str, float] = field(default_factory=dict)  # {what: seconds}
    #: Study-wide figures, relative to ``run_dir``: "summary", "reliability".
    plots: dict[str, str] = field(default_factory=dict)
    run_dir: Path | None = field(default=None, compare=False)
    #: compare's ensemble step (None: not tried, or a run saved before ensembles).
    ensemble: EnsembleInfo | None = None

    # -- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        d: dict[str, Any] = {
            "title": self.title, "scored_set": self.scored_set, "created_utc": self.created_utc,
            "command": self.command, "invoked_as": self.invoked_as, "data": self.data.to_json(),
            "machine": dict(self.environment.machine), "versions": dict(self.environment.versions),
            "speed_config": self.speed_config,
            "selection": self.selection.to_json() if self.selection is not None else None,
            "models": [m.to_json() for m in self.models], "pairwise": [p.to_json() for p in self.pairwise],
            "alerts": list(self.alerts), "timings": dict(self.timings),
        }
        if self.plots:
            d["plots"] = dict(self.plots)
        if self.ensemble is not None:
            d["ensemble"] = self.ensemble.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], run_dir: str | os.PathLike | None = None) -> Study:
        return cls(
            ensemble=EnsembleInfo.from_json(d["ensemble"]) if isinstance(d.get("ensemble"), dict) else None,
            title=str(d.get("title") or ""), data=DataSummary.from_json(d.get("data")),
            models=[ModelResult.from_json(m) for m in d.get("models") or []],
            created_utc=str(d.get("created_utc") or ""), command=str(d.get("command") or ""),
            invoked_as=str(d.get("invoked_as") or ""), scored_set=str(d.get("scored_set") or TEST_IMAGES),
            environment=Environment(dict(d.get("machine") or {}), dict(d.get("versions") or {})),
            speed_config=d.get("speed_config"),
            selection=Selection.from_json(d["selection"]) if d.get("selection") else None,
            pairwise=[PairwiseTest.from_json(p) for p in d.get("pairwise") or []],
            alerts=[str(a) for a in d.get("alerts") or []], timings=dict(d.get("timings") or {}),
            plots=dict(d.get("plots") or {}), run_dir=Path(run_dir) if run_dir is not None else None,
        )

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Study:
        """The study a finished ``compare`` or ``evaluate`` run wrote into ``run_dir``."""
        data = read_metrics(run_dir)
        if data is None:
            raise ModelFormatError(f"{Path(run_dir) / METRICS_NAME} is missing or unreadable: "
                                   "pass a directory written by `image-classifier compare` or `evaluate`")
        try:
            return cls.from_json(data, run_dir)
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFormatError(f"{Path(run_dir) / METRICS_NAME} is not a study's metrics ({err!r})") from err

    # -- what a notebook asks ---------------------------------------------------------------------
    @property
    def best(self) -> ModelResult | None:
        """The model selected on validation accuracy (the one model of an ``evaluate``)."""
        if self.selection is not None:
            return self.model(self.selection.best)
        return self.models[0] if len(self.models) == 1 else None

    def model(self, name: str | None = None) -> ModelResult:
        """The model called ``name`` (default: :attr:`best`)."""
        if name is None:
            best = self.best
            if best is None:
                raise KeyError("this study selected no model: name one of " + ", ".join(m.name for m in self.models))
            return best
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in this study; it has {', '.join(m.name for m in self.models)}")

    def rows(self) -> list[dict[str, Any]]:
        """The comparison table as one dict per model (keys = :data:`COLUMNS`, numbers unrounded)."""
        selection = self.selection
        best = selection.best if selection is not None else None
        return [m.row(selected=m.name == best, evidence=selection.candidate(m.name) if selection else None)
                for m in self.models]

    @property
    def table(self) -> Any:
        """The comparison table (the rows of ``comparison.csv``): a DataFrame with pandas, else a list of dicts."""
        rows = self.rows()
        pd = _pandas()
        return pd.DataFrame(rows, columns=list(COLUMNS)) if pd is not None else rows

    def confusion(self, model: str | None = None) -> Any:
        """The test confusion matrix of ``model`` (default: the best) with class labels: a DataFrame
        (index: true class, columns: predicted class) with pandas, else ``{true: {predicted: count}}``."""
        test = self.model(model).test
        pd = _pandas()
        if pd is not None:
            return pd.DataFrame(test.confusion_matrix, index=pd.Index(test.classes, name="true"),
                                columns=pd.Index(test.classes, name="predicted"))
        return {t: dict(zip(test.classes, row)) for t, row in zip(test.classes, test.confusion_matrix)}

    def errors(self, model: str | None = None) -> Any:
        """The misclassified test images of ``model`` (default: the best), most confident first:
        path, rel_path, true, predicted, confidence. A DataFrame with pandas, else a list of dicts."""
        rows = [{"path": e.path, "rel_path": e.rel_path, "true": e.true, "predicted": e.predicted,
                 "confidence": e.confidence}
                for e in sorted(self.model(model).errors, key=lambda e: -e.confidence)]
        pd = _pandas()
        if pd is not None:
            return pd.DataFrame(rows, columns=["path", "rel_path", "true", "predicted", "confidence"])
        return rows

    def model_path(self, model: str | None = None) -> Path:
        """The saved model directory of ``model`` (default: the best), for ``load_model``. A compare
        run records it relative to the run directory, an ``evaluate`` as it was given."""
        path = Path(self.model(model).model_dir)
        if self.selection is not None and self.run_dir is not None:
            return self.run_dir / path
        return path

    @property
    def report_path(self) -> Path | None:
        """``report.html`` of this run (None for a study not read from or written to a directory)."""
        return self.run_dir / REPORT_HTML_NAME if self.run_dir is not None else None

    def plot_paths(self) -> list[tuple[str, Path]]:
        """(caption, file) of every figure of the run that exists: the study's, then each model's."""
        if self.run_dir is None:
            return []
        found = [(key, self.run_dir / rel) for key, rel in self.plots.items()]
        for m in self.models:
            found += [(f"{m.name}: {key}", self.run_dir / rel) for key, rel in m.plots.items()]
        return [(caption, path) for caption, path in found if path.is_file()]

    def _repr_html_(self) -> str:
        """A notebook's view: the headline, the table and every figure (embedded, so the notebook
        keeps them when the run directory moves)."""
        best = self.best
        parts = [f"<h3>{html.escape(self.title)}</h3>"]
        if best is not None:
            parts.append(f"<p>{'Served model (chosen on the training and validation images)' if self.selection else 'Best model'}: "
                         f"<b>{html.escape(best.name)}</b>, test accuracy {best.test.accuracy:.1%} on "
                         f"{best.test.n} {html.escape(self.scored_set)}.</p>")
        head = "".join(f"<th>{html.escape(c)}</th>" for c in NOTEBOOK_COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in NOTEBOOK_COLUMNS) + "</tr>"
                       for r in self.rows())
        parts.append(f'<table class="image-classifier-study"><thead><tr>{head}</tr></thead>'
                     f"<tbody>{body}</tbody></table>")
        if self.report_path is not None:
            parts.append(f"<p>Full report: <code>{html.escape(os.fspath(self.report_path))}</code></p>")
        for caption, path in self.plot_paths():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}" '
                         f'style="max-width:640px"><figcaption>{html.escape(caption)}</figcaption></figure>')
        return "\n".join(parts)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "*" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

