"""What a ``compare`` run is asked to do, checked before anything is read or written.

The CLI (``image-classifier compare``) and the Python API (:func:`image_classifier.compare`)
build the same :class:`CompareOptions`; every check and default lives here, so the two cannot
disagree on what a run means.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from image_classifier.device import resolve_device
from image_classifier.errors import DatasetError, ImageClassifierError, OptionError
from image_classifier.evaluate.speed import SpeedConfig
from image_classifier.i18n import DEFAULT, SUPPORTED
from image_classifier.models.registry import get_arch, list_archs
from image_classifier.study.defaults import DEFAULT_MODELS, FACE_MODEL, RESUME_MODES
from image_classifier.training import default_cache_dir


def weights_for(arch: str, weights: dict[str, Path]) -> Path | None:
    """The weights file given for ``arch``, else one given for an architecture built on the same
    ImageNet weights (``face_embedding``'s fallback is MobileNetV2: ``mobilenet_v2=...`` serves both)."""
    if arch in weights:
        return weights[arch]
    source = get_arch(arch).pretrained
    for other, path in sorted(weights.items()):
        if other not in list_archs():
            continue
        spec = get_arch(other).pretrained
        if source is not None and spec is not None and spec.torchvision_weights == source.torchvision_weights:
            return path
    return None


def check_lang(lang: str) -> str:
    """``lang`` when the report can be written in it (one of :data:`~image_classifier.i18n.SUPPORTED`);
    ImageClassifierError otherwise, before a run starts rather than after its training."""
    if lang not in SUPPORTED:
        raise ImageClassifierError(f"unsupported report language {lang!r}: choose from {', '.join(SUPPORTED)}")
    return lang


@dataclass
class CompareOptions:
    """A ``compare`` run: the data, where to write, which models, and how.

    Each field is the CLI option of the same name (``split`` is ``--split``, ``overrides`` is
    ``--set``, ``cache=False`` is ``--no-cache``, ...). :meth:`check` validates them all and
    fills in the defaults; :func:`~image_classifier.study.comparison.run_compare` calls it.
    """

    data: Path
    #: Run directory; None: ``runs/<name of the data folder>``.
    out: Path | None = None
    #: Architectures in the order the report shows them; None: :data:`DEFAULT_MODELS`, plus
    #: ``face_embedding`` when the face survey finds a face in at least 70 % of the images.
    models: list[str] | None = None
    seed: int = 0
    #: Use this split manifest (default: ``OUT/split.csv`` when it exists, else a new split).
    split: Path | None = None
    val: float | None = None
    test: float | None = None
    #: ImageNet weights files by architecture (``--weights ARCH=PATH``).
    weights: dict[str, Path] = field(default_factory=dict)
    #: Dotted recipe overrides: {"*": {...}} applies to every model, {"arch": {...}} to one.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Timed batch-1 calls per model for the latency numbers (None: SpeedConfig's default).
    speed_repeats: int | None = None
    n_bootstrap: int = 2000
    #: Per-epoch progress bars.
    progress: bool = True
    #: Keep decoded images between runs (shared with ``train``) in ``cache_dir`` (None: the default
    #: cache folder); False decodes in memory only.
    cache: bool = True
    cache_dir: Path | None = None
    #: Export each model (up to ``study.backends.MAX_EXPORT_PARAMS``) to ONNX and time PyTorch
    #: against ONNX Runtime; False (``--no-export``) times PyTorch only.
    export: bool = True
    #: Look for faces in every image (reported per class, and per model: test accuracy on the images
    #: with and without a face); False (``--no-faces``) skips it, and the face model with it.
    faces: bool = True
    #: The shortcut audit: each model's test accuracy with the faces masked, with only the faces,
    #: and in greyscale; False (``--no-audit``) skips it.
    shortcut_audit: bool = True
    #: Add ``face_embedding`` when the survey finds a folder of people; None: when ``models`` is None.
    add_face_model: bool | None = None
    #: What to do with models already in ``out``: one of :data:`RESUME_MODES`.
    resume: str = "auto"
    #: How the run was invoked (for the report); the reproduce command is built from the options.
    invoked_as: str = ""
    #: Language of report.md, report.html and the figures (``--lang``); comparison.csv and
    #: metrics.json are the same in every language.
    lang: str = DEFAULT
    #: Face-first cascades and the weighted mix among the candidates (False: ``--no-ensemble``).
    ensemble: bool = True
    #: Leave out the cascades and mixes whose members' measured single-image latencies sum to more
    #: (``--ensemble-max-latency MS``); None: no budget.
    ensemble_max_latency_ms: float | None = None
    #: "None of these": the fraction of known validation images each model's rejection rule keeps (``--keep``).
    keep: float = 0.95
    #: A folder of images of none of the classes (``--unknown``): the rule is measured on them; None:
    #: measured by leave-one-class-out on the models' features.
    unknown: Path | None = None
    #: Where the networks train and are scored (``--device``): "auto" (a CUDA GPU when PyTorch sees
    #: one, else the CPU), "cpu", "cuda", "cuda:N".
    device: str = "auto"
    #: Processes each model trains on (``--nproc``): above 1, through ``torchrun`` on this machine
    #: (DistributedDataParallel; one GPU per process on a GPU machine).
    nproc: int = 1

    def check(self) -> CompareOptions:
        """Validate every option and return a copy with the defaults filled in (paths as Paths,
        ``out``, ``models``, ``add_face_model``, ``cache_dir``); raises ImageClassifierError."""
        models = list(DEFAULT_MODELS) if self.models is None else [str(m).strip() for m in self.models if str(m).strip()]
        if not models:
            raise DatasetError("no models to compare: pass --models with at least one architecture")
        unknown = [m for m in models if m not in list_archs()]
        if unknown:
            raise ImageClassifierError(f"unknown architecture(s) {', '.join(unknown)}; "
                                       f"available: {', '.join(list_archs())}")
        add_face_model = (self.models is None and self.faces) if self.add_face_model is None else self.add_face_model
        weights = {str(arch): Path(path) for arch, path in self.weights.items()}
        # The face model may still join the models: weights for its fallback network are not stray.
        candidates = [*models, FACE_MODEL] if add_face_model else models
        stray = [a for a in weights if not any(weights_for(m, {a: weights[a]}) for m in candidates)]
        if stray:
            raise ImageClassifierError(f"--weights given for {', '.join(stray)}, which no model in --models uses")
        if self.resume not in RESUME_MODES:
            raise ImageClassifierError(f"resume must be one of {', '.join(RESUME_MODES)}, not {self.resume!r}")
        lang = check_lang(self.lang)
        max_latency = None if self.ensemble_max_latency_ms is None else float(self.ensemble_max_latency_ms)
        if max_latency is not None and not max_latency > 0:
            raise ImageClassifierError(f"--ensemble-max-latency must be a positive number of milliseconds, "
                                       f"not {self.ensemble_max_latency_ms}")
        if not 0.0 < float(self.keep) < 1.0:
            raise ImageClassifierError(f"--keep must be between 0 and 1 (the fraction of known validation images "
                                       f"the rejection rule keeps, e.g. 0.95), not {self.keep}")
        if self.unknown is not None and not Path(self.unknown).is_dir():
            raise ImageClassifierError(f"--unknown {self.unknown}: not a folder (give a folder of images of none "
                                       "of the classes)")
        device = resolve_device(self.device)
        if int(self.nproc) < 1:
            raise OptionError(f"--nproc must be at least 1, not {self.nproc}")
        if int(self.nproc) > 1 and device.type == "cuda" and int(self.nproc) > torch.cuda.device_count():
            raise OptionError(f"--nproc {self.nproc} on --device {self.device}: this machine has "
                              f"{torch.cuda.device_count()} GPU(s) and each process needs its own")
        data = Path(self.data)
        return CompareOptions(
            data=data, out=Path(self.out) if self.out is not None else Path("runs") / (data.resolve().name or "run"),
            models=models, seed=int(self.seed), split=Path(self.split) if self.split is not None else None,
            val=self.val, test=self.test, weights=weights,
            overrides={scope: dict(values) for scope, values in self.overrides.items()},
            speed_repeats=self.speed_repeats, n_bootstrap=self.n_bootstrap, progress=self.progress, cache=self.cache,
            cache_dir=(Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()) if self.cache
            else None,
            export=self.export, faces=self.faces, add_face_model=add_face_model, resume=self.resume,
            shortcut_audit=bool(self.shortcut_audit),
            invoked_as=self.invoked_as, lang=lang, ensemble=bool(self.ensemble), ensemble_max_latency_ms=max_latency,
            keep=float(self.keep), unknown=Path(self.unknown) if self.unknown is not None else None,
            device=str(self.device), nproc=int(self.nproc),
        )

    @property
    def run_dir(self) -> Path:
        if self.out is None:
            raise ValueError("call check() first: it fills in the run directory")
        return Path(self.out)

    @property
    def speed(self) -> SpeedConfig:
        speed = SpeedConfig()
        if self.speed_repeats is not None:
            speed.repeats = speed.e2e_repeats = max(1, self.speed_repeats)
        return speed

    def overrides_for(self, arch: str) -> dict[str, Any] | None:
        """The recipe overrides that apply to ``arch`` (the ones for every model, then its own)."""
        return {**self.overrides.get("*", {}), **self.overrides.get(arch, {})} or None

    def weights_for(self, arch: str) -> Path | None:
        return weights_for(arch, self.weights)

