"""The models a server answers with: found on disk, loaded once, shared read-only by every request.

A served path is either one saved model directory (it holds ``model.json``) or a whole run
directory written by ``image-classifier compare`` (``models/<name>/`` saved models, a ``best``
pointer and ``metrics.json`` with the held-out test metrics). Everything about the files is
checked by :func:`discover` before any weights are read, so a wrong path fails in a second with a
message, not after minutes of loading.

Concurrency: a loaded network is never modified after loading, and its forward pass runs under
``torch.inference_mode()``. What *is* shared is the CPU: torch parallelises one forward pass over
``torch.get_num_threads()`` cores, and two passes started at once would each ask for all of them.
So request threads only decode and preprocess (Pillow releases the GIL, so that overlaps), then
hand the tensor to ``max_parallel`` dedicated inference threads (by default cores // torch
threads), which batch requests that arrive together (see :mod:`image_classifier.serve.batcher`).
"""
from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from image_classifier.data.decode import MAX_PIXELS
from image_classifier.errors import ImageClassifierError, ModelFormatError
from image_classifier.faces import FaceCache
from image_classifier.inference.backends import backend_device
from image_classifier.inference.explain import explain as explain_image
from image_classifier.inference.files import top_labels
from image_classifier.inference.loading import load_model
from image_classifier.inference.model import Model
from image_classifier.inference.rejection import UNKNOWN
from image_classifier.runs import (
    CARD_NAME, MODELS_DIR, best_model_name, is_model_dir, models_of_run, read_metrics, run_of_model_dir,
)
from image_classifier.saved_model import ModelCard, read_card
from image_classifier.serve.batcher import InferenceWorkers, WorkersClosedError

log = logging.getLogger(__name__)

# How many recent request timings each model keeps for the median shown on the page.
LATENCY_WINDOW = 200
# Largest batch the inference threads form from requests waiting at the same time.
DEFAULT_MAX_BATCH = 8


class UnknownModelError(ImageClassifierError):
    """A request named a model this server does not have."""


class NotReadyError(ImageClassifierError):
    """A prediction was asked for before the models finished loading (or after loading failed)."""


@dataclass(frozen=True)
class ModelEntry:
    """A model found on disk, before its weights are loaded."""

    name: str
    path: Path
    card: ModelCard
    metrics: dict[str, Any] | None = None  # this model's entry in the run's metrics.json, if any
    #: How many strangers it accepted when compare chose the served model (a folder of people):
    #: {"accepted", "limit", "source"}; None when not measured.
    strangers: dict[str, Any] | None = None


@dataclass(frozen=True)
class Discovery:
    entries: list[ModelEntry]
    default: str
    run_dir: Path | None = None


def _metrics_by_model(metrics: Any) -> dict[str, dict[str, Any]]:
    """``{model directory name: entry}`` from compare's metrics.json (``{"models": [{"name": ...,
    "model_dir": "models/x", "test": ...}, ...]}``; a row without ``model_dir`` by its name): a
    cascade's row is named after its members but lives in ``models/ensemble``."""
    models = metrics.get("models") if isinstance(metrics, dict) else None
    if not isinstance(models, list):
        return {}
    return {Path(m["model_dir"]).name if isinstance(m.get("model_dir"), str) and m["model_dir"] else m["name"]: m
            for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)}


def _strangers(metrics: Any, model: dict[str, Any] | None) -> dict[str, Any] | None:
    """The strangers a model accepted in its run's choice (metrics.json's ``selection``), or None."""
    selection = metrics.get("selection") if isinstance(metrics, dict) else None
    if not isinstance(selection, dict) or not selection.get("people") or not model:
        return None
    for c in selection.get("candidates") or []:
        if isinstance(c, dict) and c.get("name") == model.get("name") and c.get("strangers_accepted") is not None:
            return {"accepted": float(c["strangers_accepted"]), "limit": selection.get("max_strangers"),
                    "source": selection.get("strangers_source") or ""}
    return None


def test_summary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The test numbers the page shows (accuracy, its 95 % CI, macro-F1, n) from a model's entry in
    metrics.json; None when the model was not evaluated."""
    test = (metrics or {}).get("test")
    if not isinstance(test, dict) or not isinstance(test.get("accuracy"), (int, float)):
        return None
    out: dict[str, Any] = {"accuracy": float(test["accuracy"])}
    ci = test.get("accuracy_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        out["accuracy_ci95"] = [float(ci[0]), float(ci[1])]
    if isinstance(test.get("macro_f1"), (int, float)):
        out["macro_f1"] = float(test["macro_f1"])
    if isinstance(test.get("n"), int):
        out["n"] = test["n"]
    return out


def _number(obj: Any, *keys: str) -> float | None:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return float(obj) if isinstance(obj, (int, float)) and not isinstance(obj, bool) else None


def _read_metrics(run_dir: Path) -> tuple[dict[str, dict[str, Any]], str | None, dict[str, Any]]:
    """Per-model entries of the run's metrics.json (written by compare), its selected model, and the file."""
    data = read_metrics(run_dir) or {}
    selected = (data.get("selection") or {}).get("best") if isinstance(data.get("selection"), dict) else None
    return _metrics_by_model(data), selected if isinstance(selected, str) else None, data


def discover(paths: Sequence[str | os.PathLike], only: Sequence[str] | None = None) -> Discovery:
    """Find the models to serve under ``paths`` (model directories and/or run directories).

    Reads the cards only, no weights. ``only`` restricts a run to the named models. A run's
    default model is the one its ``best`` pointer designates (compare selects it on validation
    accuracy), else the one with the highest validation accuracy, else the first.
    """
    if not paths:
        raise ModelFormatError("no model to serve: give a saved model directory or a runs/NAME directory")
    entries: list[ModelEntry] = []
    default: str | None = None
    run_dir: Path | None = None
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ModelFormatError(f"{path} does not exist: give a saved model directory or a runs/NAME directory")
        if is_model_dir(path):
            # A model inside a run (runs/NAME/best, runs/NAME/models/x) still shows its test metrics.
            parent_run = run_of_model_dir(path)
            by_model, _, data = _read_metrics(parent_run) if parent_run else ({}, None, {})
            metrics = by_model.get(path.resolve().name)
            name = path.resolve().name
            entries.append(ModelEntry(_unique(name, entries), path, read_card(path), metrics, _strangers(data, metrics)))
            continue
        dirs = models_of_run(path)
        if not dirs:
            raise ModelFormatError(
                f"{path} is neither a saved model (no {CARD_NAME}) nor a run directory (no {MODELS_DIR}/*/{CARD_NAME}); "
                "train one with `image-classifier train` or `image-classifier compare`")
        run_dir = path
        metrics_by_model, selected, data = _read_metrics(path)
        best = best_model_name(path, dirs) or (selected if selected in dirs else None)
        chosen = list(dirs)
        if only:
            missing = [n for n in only if n not in dirs]
            if missing:
                raise ModelFormatError(f"{path} has no model {', '.join(missing)}; it has {', '.join(dirs)}")
            chosen = [n for n in dirs if n in only]
        run_entries = [ModelEntry(_unique(n, entries), dirs[n], read_card(dirs[n]), metrics_by_model.get(n),
                                  _strangers(data, metrics_by_model.get(n))) for n in chosen]
        entries.extend(run_entries)
        if default is None:
            by_dir = {e.path.name: e.name for e in run_entries}
            if best in by_dir:
                default = by_dir[best]
            else:
                scores = [_number(e.metrics, "validation", "accuracy") or -1.0 for e in run_entries]
                default = run_entries[scores.index(max(scores))].name
    return Discovery(entries, default or entries[0].name, run_dir)


def _unique(name: str, entries: Sequence[ModelEntry]) -> str:
    taken = {e.name for e in entries}
    if name not in taken:
        return name
    i = 2
    while f"{name}-{i}" in taken:
        i += 1
    return f"{name}-{i}"


class LatencyWindow:
    """The last few request timings of one model, for a running median (thread-safe)."""

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(ms)
            self.count += 1

    def median(self) -> float | None:
        with self._lock:
            return statistics.median(self._values) if self._values else None


@dataclass
class ServedModel:
    entry: ModelEntry
    classifier: Model  # any kind of model (inference.model)
    latency: LatencyWindow = field(default_factory=LatencyWindow)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def classes(self) -> list[str]:
        return list(self.classifier.classes)

    def info(self, default: bool = False) -> dict[str, Any]:
        card = self.entry.card
        median = self.latency.median()
        return {
            "name": self.name,
            "architecture": str(card.architecture),
            "backend": str(getattr(self.classifier, "backend_name", "torch")),
            "backend_reason": getattr(self.classifier, "backend_reason", None),
            "classes": self.classes,
            "default": default,
            "input_size": card.input_size,
            "test": test_summary(self.entry.metrics),
            "validation_accuracy": _number(self.entry.metrics, "validation", "accuracy"),
            "offline_latency_ms": _number(self.entry.metrics, "speed", "e2e_latency_ms_p50"),
            "latency_ms_median": None if median is None else round(median, 2),
            "requests": self.latency.count,
            "strangers": self.entry.strangers,
        }


@dataclass(frozen=True)
class Prediction:
    model: str
    label: str
    probabilities: dict[str, float]
    top: list[dict[str, Any]]
    latency_ms: float  # decode + preprocess + wait for a free forward slot + forward, in the server
    decode_ms: float  # decode + resize + normalise
    queue_ms: float  # waiting while other requests' forward passes use the cores
    inference_ms: float  # the forward pass (of the whole batch this image was part of; 0 when a face answered)
    batch_size: int = 1
    #: What decided (a face model: ``face`` box, ``face_method``, ``faces_found``, ``image_size``), and
    #: "none of these": ``unknown``, ``closest`` {label, probability}, ``rejection`` (or None).
    details: dict[str, Any] = field(default_factory=dict)
    #: Why (``?explain=1`` only): :meth:`inference.explain.Explanation.to_api`, and what it cost.
    explanation: dict[str, Any] | None = None
    explain_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "model": self.model,
            "label": self.label,
            "probabilities": self.probabilities,
            "top": self.top,
            "latency_ms": round(self.latency_ms, 3),
            "timing": {"decode_ms": round(self.decode_ms, 3), "queue_ms": round(self.queue_ms, 3),
                       "inference_ms": round(self.inference_ms, 3), "batch_size": self.batch_size},
            **self.details,
        }
        if self.explanation is not None:
            d["explanation"] = self.explanation
            d["timing"]["explain_ms"] = round(self.explain_ms or 0.0, 3)
        return d


def default_max_parallel() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, torch.get_num_threads()))


class ModelStore:
    """Loads the discovered models once and answers predictions from any thread.

    ``ready`` turns true once every model is loaded and warmed up; until then (or if loading
    failed, see ``error``) :meth:`predict_bytes` raises :class:`NotReadyError`.
    """

    def __init__(self, discovery: Discovery, *, backend: str = "torch", max_pixels: int | None = None,
                 max_parallel: int | None = None, max_batch: int = DEFAULT_MAX_BATCH, reject: bool = True,
                 device: str | torch.device = "cpu", keep: float | None = None) -> None:
        self.discovery = discovery
        self.backend = backend
        #: Where the networks compute (``serve --device``), checked against the backend now, before
        #: any weights are read: a GPU that is not there fails at start-up, not at the first request.
        self.device = backend_device(backend, device)
        #: Answer "unknown" (None of these) where a model's rejection rule says so (``serve --no-reject``: False).
        self.reject = reject
        #: ``serve --keep``: every model's "none of these" threshold moved to keep this share of its
        #: known photos (None: each model's own); a request's ``?keep=`` overrides it.
        self.keep = keep
        self.max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
        self.max_parallel = max_parallel or default_max_parallel()
        self.max_batch = max_batch
        self._workers: InferenceWorkers | None = None
        self._models: dict[str, ServedModel] = {}
        self._ready = threading.Event()
        self._load_lock = threading.Lock()
        self._closed = threading.Event()
        self.error: str | None = None
        self.load_seconds: float | None = None

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike], *, only: Sequence[str] | None = None,
                   **kwargs: Any) -> ModelStore:
        return cls(discover(paths, only), **kwargs)

    @property
    def default(self) -> str:
        return self.discovery.default

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.discovery.entries]

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def load(self) -> ModelStore:
        """Load every model (the default first) and run one warm-up prediction each. Idempotent.

        After :meth:`close` it loads nothing more and returns with ``ready`` still false.
        """
        # In memory and bounded: the same photo uploaded again is not analysed again by a face model.
        face_cache = FaceCache()
        with self._load_lock:
            if self.ready or self.closed:
                return self
            start = time.perf_counter()
            entries = sorted(self.discovery.entries, key=lambda e: e.name != self.default)
            try:
                for entry in entries:
                    if self.closed:  # stopped while loading: skip the remaining models
                        return self
                    t0 = time.perf_counter()
                    clf = load_model(entry.path, backend=self.backend, face_cache=face_cache, reject=self.reject,
                                     device=self.device)
                    if self.keep is not None and self.reject:
                        if clf.rejection_rule is None:
                            log.warning("%s has no \"none of these\" rule: --keep does not apply to it", entry.name)
                        else:
                            clf = clf.with_keep(self.keep)
                    self._warm_up(clf)
                    self._models[entry.name] = ServedModel(entry, clf)
                    log.info("loaded %s (%s) in %.1f s; backend %s (%s)", entry.name,
                             entry.card.architecture, time.perf_counter() - t0,
                             getattr(clf, "backend_name", "torch"), getattr(clf, "backend_reason", "requested"))
            except Exception as err:
                self.error = str(err)
                raise
            self.load_seconds = time.perf_counter() - start
            self._workers = InferenceWorkers(self.max_parallel, self.max_batch)
            self._ready.set()
        return self

    def close(self) -> None:
        """Stop: later predictions raise :class:`NotReadyError`; the forward passes under way finish
        first, and a load in progress stops after the model it is loading. Call it after the web
        server stopped taking requests, and before the process exits (see ``InferenceWorkers.close``)."""
        self._closed.set()
        with self._load_lock:  # waits for the model being loaded, so no thread is left inside torch
            self._ready.clear()
            if self._workers is not None:
                self._workers.close()

    def start_loading(self) -> threading.Thread:
        """Load in a background thread (so a server can answer /api/health while loading)."""
        def target() -> None:
            try:
                self.load()
            except Exception:  # noqa: BLE001 - reported through .error and /api/health
                log.exception("loading the models failed")

        thread = threading.Thread(target=target, name="model-loader", daemon=True)
        thread.start()
        return thread

    @staticmethod
    def _warm_up(clf: Model) -> None:
        # The first forward pass pays for allocator growth and kernel selection; pay it at start-up.
        size = int(clf.preprocessing.input_size)
        clf.predict([Image.new("RGB", (size, size), (128, 128, 128))])

    def get(self, name: str | None = None) -> ServedModel:
        if not self.ready:
            raise NotReadyError(self.error and f"loading the models failed: {self.error}"
                                or self.closed and "the server is stopping" or "models are still loading")
        key = self.default if name is None or name == "" else name
        try:
            return self._models[key]
        except KeyError:
            raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(self.names)}") from None

    def tradeoffs(self) -> dict[str, dict[str, Any]]:
        """Per loaded model with a rule in force: what its "none of these" threshold trades on validation."""
        if not self.ready:
            return {}
        classifiers = {name: self._models[name].classifier for name in self.names}
        trades = {name: clf.tradeoff() for name, clf in classifiers.items() if clf.reject}
        return {name: trade for name, trade in trades.items() if trade is not None}

    def models_info(self) -> list[dict[str, Any]]:
        if not self.ready:
            return []
        return [self._models[n].info(default=n == self.default) for n in self.names]

    def predict_bytes(self, data: bytes, model: str | None = None, top_k: int | None = None, *,
                      explain: bool = False, keep: float | None = None) -> Prediction:
        """Decode ``data`` (in memory) and classify it. Raises ``UnreadableImageError`` for bad bytes.

        ``explain``: also say why (Grad-CAM of the answer, or the deciding face's box), computed
        here in the request thread, outside the batched forward passes, and only when asked.
        ``keep``: this answer's "none of these" threshold (``?keep=``; OptionError for a model
        without a rule); without the rule (``--no-reject``) it changes nothing."""
        served = self.get(model)
        clf = served.classifier
        judge = clf.with_keep(keep) if keep is not None and clf.reject else clf
        t0 = time.perf_counter()
        image = clf.decode(data, max_pixels=self.max_pixels)
        # Resize + normalise (and for a face model the face head) here, in the request thread, in parallel.
        prepared = clf.prepare([image])
        t1 = time.perf_counter()
        queue_ms = forward_ms = 0.0
        batch_size = 0
        if prepared.rows:  # the backend's forward pass, batched with other requests
            try:
                result = self._workers.submit(served.name, clf.predict_tensor,  # type: ignore[union-attr]
                                              torch.from_numpy(prepared.batch))
            except WorkersClosedError as err:
                raise NotReadyError(str(err)) from None
            probs = clf.finish(prepared, result.probabilities[None])[0]
            queue_ms, forward_ms, batch_size = result.queue_ms, result.forward_ms, result.batch_size
        else:  # answered from the face descriptor computed while decoding
            probs = clf.finish(prepared, None)[0]
        details = dict(prepared.details[0])
        unknown = judge.judge(probs[None], [details])[0]  # "none of these": unknown, closest, rejection
        details["threshold"] = judge.tradeoff() if judge.reject else None
        t2 = time.perf_counter()
        classes = served.classes
        top = top_labels(probs, classes, top_k)
        latency = (t2 - t0) * 1000
        served.latency.add(latency)
        explanation = explain_ms = None
        if explain:
            t3 = time.perf_counter()
            explanation = explain_image(clf, data, target=top[0]["label"], decoded=image).to_api()
            explain_ms = (time.perf_counter() - t3) * 1000
        return Prediction(
            model=served.name,
            label=UNKNOWN if unknown else top[0]["label"],
            probabilities={c: float(p) for c, p in zip(classes, probs)},
            top=top,
            latency_ms=latency,
            decode_ms=(t1 - t0) * 1000,
            queue_ms=queue_ms,
            inference_ms=forward_ms,
            batch_size=batch_size,
            details=details,
            explanation=explanation,
            explain_ms=explain_ms,
        )
