"""What a ``compare`` run is asked to do, checked before anything is read or written.

The CLI (``image-classifier compare``) and the Python API (:func:`image_classifier.compare`)
build the same :class:`CompareOptions`; every check and default lives here, so the two cannot
disagree on what a run means.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from image_classifier.errors import DatasetError, OptionError
from image_classifier.i18n import DEFAULT, SUPPORTED
from image_classifier.inference import BACKEND_HELP, BACKENDS
from image_classifier.optionspec import (
    DEFAULT_KEEP, DEVICE_HELP, DEVICE_METAVAR, at_least_one, cache_dir_option, cache_option, cache_root, check_keep,
    check_options, one_of, option, parse_arch_path,
)
from image_classifier.runs import COMPARISON_CSV_NAME, METRICS_NAME, REPORT_HTML_NAME, REPORT_MD_NAME, SPLIT_NAME
from image_classifier.study.defaults import DEFAULT_MODELS, FACE_MODEL, RESUME_MODES

if TYPE_CHECKING:
    from image_classifier.evaluate.speed import SpeedConfig

# This module is light (the heavy ones are imported inside the functions that use them): the command
# line builds `compare --help` and `evaluate --help` from these declarations without loading torch.
#: The report's language, for compare and evaluate.
LANG_HELP = (f"language of {REPORT_MD_NAME}, {REPORT_HTML_NAME} and their figures: {', '.join(SUPPORTED)} (default "
             f"{DEFAULT}); {COMPARISON_CSV_NAME}, {METRICS_NAME} and what this command prints are the same in every "
             "language")


def weights_for(arch: str, weights: dict[str, Path]) -> Path | None:
    """The weights file given for ``arch``, else one given for an architecture built on the same
    ImageNet weights (``face_embedding``'s fallback is MobileNetV2: ``mobilenet_v2=...`` serves both)."""
    from image_classifier.models.registry import get_arch, list_archs

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
    OptionError otherwise, before a run starts rather than after its training."""
    if lang not in SUPPORTED:
        raise OptionError(f"unsupported report language {lang!r}: choose from {', '.join(SUPPORTED)}")
    return lang


def parse_weights(items: list[str]) -> dict[str, Path]:
    """``--weights ARCH=PATH`` (repeatable) -> {arch: path}."""
    out: dict[str, Path] = {}
    for item in items:
        arch, path = parse_arch_path(item)
        if arch is None:
            raise OptionError(f"--weights {item!r}: write ARCH=PATH, e.g. resnet50=weights/resnet50.pth")
        out[arch] = path
    return out


def parse_set(items: list[str]) -> dict[str, dict[str, str]]:
    """``--set [ARCH:]KEY=VALUE`` (repeatable) -> {"*" or arch: {key: value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OptionError(f"--set {item!r}: write KEY=VALUE or ARCH:KEY=VALUE")
        scope, colon, key = key.rpartition(":") if ":" in key else ("*", "", key)
        out.setdefault(scope or "*", {})[key.strip()] = value
    return out


def _check_latency(ms: Any) -> float:
    if not float(ms) > 0:
        raise OptionError(f"--ensemble-max-latency must be a positive number of milliseconds, not {ms}")
    return float(ms)


def _check_unknown(folder: Any) -> Path:
    if not Path(folder).is_dir():
        raise OptionError(f"--unknown {folder}: not a folder (give a folder of images of none of the classes)")
    return Path(folder)


@dataclass
class CompareOptions:
    """A ``compare`` run: the data, where to write, which models, and how.

    Each field is the CLI option of the same name (``split`` is ``--split``, ``set`` is ``--set``,
    ``cache=False`` is ``--no-cache``, ...), declared once here with its help and check: the parser,
    :meth:`check` and the reproduce command are derived from these fields (:mod:`image_classifier.optionspec`).
    :meth:`check` validates them all and fills in the defaults; ``run_compare`` calls it.
    """

    data: Path = option(positional=True, help="folder with one sub-folder of images per class")
    models: list[str] | str | None = option(
        None, parse=lambda text: text.split(","), show=lambda models: [",".join(models)],
        help=f"comma-separated architectures (default: {','.join(DEFAULT_MODELS)}, plus {FACE_MODEL} when at least "
             "70 %% of the images show a face)")
    out: Path | None = option(None, help="run directory (default: runs/<DATA folder name>)")
    seed: int = option(0, always=True, help="seed for the split and training (default 0)")
    split: Path | None = option(None, help=f"use this split manifest (default: OUT/{SPLIT_NAME} when it exists, else "
                                           "a new split)")
    val: float | None = option(None, help="validation fraction for a new split")
    test: float | None = option(None, help="test fraction for a new split")
    weights: dict[str, Path] = option(
        factory=dict, metavar="ARCH=PATH", repeat=parse_weights,
        show=lambda weights: [f"{arch}={os.fspath(path)}" for arch, path in sorted(weights.items())],
        help="ImageNet weights file for a pretrained architecture (repeatable), e.g. "
             "resnet50=../shared/weights/resnet50-keras-imagenet.pth")
    set: dict[str, dict[str, Any]] = option(
        factory=dict, metavar="[ARCH:]KEY=VALUE", repeat=parse_set, was="overrides",
        show=lambda scopes: [f"{key}={value}" if scope == "*" else f"{scope}:{key}={value}"
                             for scope, values in sorted(scopes.items()) for key, value in values.items()],
        help="recipe override for every model, or for one with ARCH: (repeatable), "
             "e.g. --set batch_size=16 --set alexnet_like:phases.0.epochs=30")
    speed_repeats: int | None = option(None, help="timed batch-1 calls per model for the latency numbers (default 50)")
    progress: bool = option(True, reproduce=False, help="no per-epoch progress bars")
    cache: bool = cache_option(reproduce=False)
    cache_dir: Path | None = cache_dir_option(reproduce=False)
    export: bool = option(True, help="do not export the models to ONNX (then only eager PyTorch is timed and served); "
                                     "by default every model up to 100 M parameters gets a verified model.onnx and "
                                     "the report compares PyTorch with ONNX Runtime")
    faces: bool = option(True, help=f"do not look for faces (no face survey, no {FACE_MODEL} model, no face/no-face "
                                    "test accuracy)")
    audit: bool = option(True, was="shortcut_audit",
                         help="skip the shortcut audit (each model's test accuracy with the faces masked, with only "
                              "the faces, and in greyscale)")
    add_people_model: bool | None = option(None, cli=False, help=f"add {FACE_MODEL} when the face survey finds a folder "
                                                               "of people (None: when models is None)")
    resume: str = option("auto", check=one_of("resume", RESUME_MODES), reproduce=False, switches={
        "--resume": ("resume", "continue the run in OUT (also the default when OUT holds one): reuse every finished "
                               "model whose card matches this run (split, recipe, seed, weights, library versions), "
                               "resume the interrupted one from its last checkpoint; unlike the default, fail when "
                               "OUT holds no run"),
        "--fresh": ("fresh", "start over: delete the models, split and best pointer a previous compare wrote in OUT "
                             "(nothing else), then run as if OUT were new")},
        help=f"what to do with models already in out: one of {', '.join(RESUME_MODES)}")
    invoked_as: str = option("", cli=False, help="how the run was invoked (for the report)")
    lang: str = option(DEFAULT, choices=SUPPORTED, check=check_lang, reproduce=False, help=LANG_HELP)
    ensemble: bool = option(True, help="serve a single model: no face-first cascades and no weighted mix among the "
                                       "candidates (by default they are, and the one chosen is saved as "
                                       "models/ensemble)")
    ensemble_max_latency: float | None = option(
        None, metavar="MS", check=_check_latency, was="ensemble_max_latency_ms",
        help="leave out the cascades and mixes whose members' measured single-image latencies add up to more than "
             "MS milliseconds (e.g. 50)")
    keep: float = option(DEFAULT_KEEP, metavar="FRACTION", check=check_keep,
                         help="\"none of these\": the fraction of the known validation images each model's rejection "
                              "rule keeps; less familiar images are answered \"unknown\" (default: %(default)s)")
    unknown: Path | None = option(None, metavar="DIR", check=_check_unknown,
                                  help="a folder of images of none of the classes (nested or flat): each model's "
                                       "rejection rule is measured on them against the test split (default: "
                                       "leave-one-class-out on the models' features)")
    device: str = option("auto", metavar=DEVICE_METAVAR, help=DEVICE_HELP)
    nproc: int = option(1, metavar="N", check=at_least_one("--nproc"),
                        help="train each model on N processes of this machine through torchrun "
                             "(DistributedDataParallel; on a GPU machine one GPU per process); default 1")

    def check(self) -> CompareOptions:
        """Validate every option and return a copy with the defaults filled in (paths as Paths,
        ``out``, ``models``, ``add_people_model``, ``cache_dir``); raises ImageClassifierError."""
        import torch

        from image_classifier.device import resolve_device
        from image_classifier.models.registry import list_archs

        checked = check_options(self)
        chosen = self.models.split(",") if isinstance(self.models, str) else self.models
        models = list(DEFAULT_MODELS) if chosen is None else [str(m).strip() for m in chosen if str(m).strip()]
        if not models:
            raise DatasetError("no models to compare: pass --models with at least one architecture")
        unknown = [m for m in models if m not in list_archs()]
        if unknown:
            raise OptionError(f"unknown architecture(s) {', '.join(unknown)}; available: {', '.join(list_archs())}")
        add_people_model = (chosen is None and self.faces) if self.add_people_model is None else self.add_people_model
        weights = {str(arch): Path(path) for arch, path in self.weights.items()}
        # The face model may still join the models: weights for its fallback network are not stray.
        candidates = [*models, FACE_MODEL] if add_people_model else models
        stray = [a for a in weights if not any(weights_for(m, {a: weights[a]}) for m in candidates)]
        if stray:
            raise OptionError(f"--weights given for {', '.join(stray)}, which no model in --models uses")
        device = resolve_device(self.device)
        nproc = checked.get("nproc", self.nproc)
        if nproc > 1 and device.type == "cuda" and nproc > torch.cuda.device_count():
            raise OptionError(f"--nproc {self.nproc} on --device {self.device}: this machine has "
                              f"{torch.cuda.device_count()} GPU(s) and each process needs its own")
        data = Path(self.data)
        cache_dir = cache_root(self.cache, self.cache_dir)
        return replace(
            self, **checked, data=data, models=models, add_people_model=add_people_model, weights=weights,
            out=Path(self.out) if self.out is not None else Path("runs") / (data.resolve().name or "run"),
            seed=int(self.seed), split=Path(self.split) if self.split is not None else None, cache_dir=cache_dir,
            set={scope: dict(values) for scope, values in self.set.items()}, device=str(self.device),
        )

    @property
    def run_dir(self) -> Path:
        if self.out is None:
            raise ValueError("call check() first: it fills in the run directory")
        return Path(self.out)

    @property
    def speed(self) -> SpeedConfig:
        from image_classifier.evaluate.speed import SpeedConfig

        speed = SpeedConfig()
        if self.speed_repeats is not None:
            speed.repeats = speed.e2e_repeats = max(1, self.speed_repeats)
        return speed

    def overrides_for(self, arch: str) -> dict[str, Any] | None:
        """The recipe overrides that apply to ``arch`` (the ones for every model, then its own)."""
        return {**self.set.get("*", {}), **self.set.get(arch, {})} or None

    def weights_for(self, arch: str) -> Path | None:
        return weights_for(arch, self.weights)



def _speed_config() -> SpeedConfig:
    from image_classifier.evaluate.speed import SpeedConfig

    return SpeedConfig()


@dataclass
class EvaluateOptions:
    """An ``evaluate`` run, declared as :class:`CompareOptions` is (``speed=False`` is ``--no-speed``)."""

    model: Path = option(positional=True, metavar="MODEL_DIR", help="saved model directory or runs/NAME")
    data: Path = option(positional=True, metavar="DATA", help="folder with one sub-folder of images per class")
    split: Path | None = option(None, metavar="CSV", help="split manifest; score only --subset of it")
    #: None: "test" with a split (check() fills it in), nothing without one.
    subset: str | None = option(None, choices=("train", "val", "test"), help="which subset of --split to score "
                                                                             "(default: test)")
    out: Path | None = option(None, metavar="DIR", help="where to write the report (default: "
                                                        "runs/evaluate-<model>-<DATA name>)")
    speed: bool = option(True, help="skip the size/latency/throughput measurements")
    backend: str = option("auto", choices=BACKENDS, help=BACKEND_HELP)
    device: str = option("auto", metavar=DEVICE_METAVAR, help=DEVICE_HELP)
    reject: bool = option(True, help="do not apply the model's \"none of these\" rejection rule")
    unknown: Path | None = option(None, metavar="DIR", help="a folder of images of none of the model's classes (nested "
                                  "or flat): measure how well its rejection rule tells them from DATA's images "
                                  "(AUROC, unknowns accepted)")
    lang: str = option(DEFAULT, choices=SUPPORTED, check=check_lang, reproduce=False, help=LANG_HELP)
    speed_config: SpeedConfig = option(factory=_speed_config, cli=False, help="how size and speed are measured")
    invoked_as: str = option("", cli=False, help="how the run was invoked (for the report)")

    def check(self) -> EvaluateOptions:
        options = replace(self, subset=(self.subset or "test") if self.split is not None else None)
        return replace(options, **check_options(options))
