"""``train_model``: one architecture, one split, one saved model directory; ``train_folder``: the
same from a data folder (the split made or read first), as ``image-classifier train`` runs it
(and :func:`image_classifier.train`, which then loads the saved model)."""
from __future__ import annotations

import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from safetensors.torch import load_file

from image_classifier.data.split import resolve_split
from image_classifier.device import describe_device
from image_classifier.errors import DatasetError, ImageClassifierError, OptionError
from image_classifier.faces import FaceCache
from image_classifier.fileio import sha256_file
from image_classifier.machine import bf16_supported
from image_classifier.optionspec import build, cache_root
from image_classifier.models.registry import build_model, get_arch
from image_classifier.models.weights import resolve_pretrained
from image_classifier.recipe import Recipe
from image_classifier.runtime import configure
from image_classifier.runs import CARD_NAME, RESUME_NAME, SPLIT_NAME, WEIGHTS_NAME
from image_classifier.saved_model import ModelCard, library_versions, read_card
from image_classifier.training.cache import ImageCache
from image_classifier.training.checkpoint import RunWriter, load_resume_state
from image_classifier.training.distributed import (
    Dist,
    DistributedJobError,
    broadcast_object,
    init_from_environment,
    is_collective_failure,
    shutdown,
)
from image_classifier.training.face_head import AFTER_TRAINING
from image_classifier.training.loop import Trainer, TrainState, plan_phases
from image_classifier.training.options import TrainOptions
from image_classifier.training.seeding import seed_global
from image_classifier.units import fmt_seconds

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_dir: Path
    arch: str
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_accuracy: float
    best_val_loss: float
    train_seconds: float
    peak_rss_mb: float
    #: Per phase: {"name", "epochs", "seconds", "images_per_s", "feature_seconds"}.
    phases: list[dict[str, Any]] = field(default_factory=list)
    card: ModelCard | None = None
    #: False on the processes of a distributed job other than rank 0: they trained, rank 0 wrote.
    is_main: bool = True

    @classmethod
    def from_card(cls, model_dir: str | os.PathLike, card: ModelCard) -> TrainResult:
        """The result of a finished run, read back from its card (``compare`` reuses finished models)."""
        best = card.best or {}
        return cls(
            model_dir=Path(model_dir), arch=str(card.architecture), history=list(card.history or []),
            best_epoch=int(best["epoch"]), best_val_accuracy=float(best["val_accuracy"]),
            best_val_loss=float(best["val_loss"]), train_seconds=float(card.train_seconds or 0.0),
            peak_rss_mb=float(card.peak_rss_mb or 0.0), phases=list(card.phases or []), card=card,
        )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (the whole process: it includes earlier models)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _manifest_hash(split: Any) -> str | None:
    value = getattr(split, "manifest_sha256", None)
    return value() if callable(value) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def resolve_recipe(arch: str, overrides: dict[str, Any] | None = None, recipe: Recipe | None = None) -> Recipe:
    """The effective recipe: the architecture's default (or ``recipe``) with overrides applied, validated.

    Raises :class:`~image_classifier.errors.OptionError` (a ``ValueError``) for a bad override.
    """
    return TrainOptions(arch, set=dict(overrides or {}), recipe=recipe).effective_recipe()


def _holds_run(out: Path) -> bool:
    return any((out / name).exists() for name in (CARD_NAME, RESUME_NAME))


def _refuse_existing(out: Path) -> NoReturn:
    raise ImageClassifierError(
        f"{out} already holds a model or an interrupted run; pass --resume to continue it, "
        "--force to replace it, or choose another --out"
    )


def _read_resume(writer: RunWriter, out: Path) -> dict[str, Any]:
    if not writer.resume_path.is_file():
        if (out / CARD_NAME).is_file() and read_card(out).status == "complete":
            raise ImageClassifierError(f"the run in {out} already finished; nothing to resume")
        raise ImageClassifierError(f"nothing to resume in {out}: {RESUME_NAME} is missing (start a new run without --resume)")
    return load_resume_state(writer.resume_path)


def _precision_name(autocast_dtype: torch.dtype | None, device: torch.device) -> str:
    """The card's ``precision``: ``bf16``/``fp32`` on a CPU (as before), ``bf16-mixed``/``fp16-mixed`` on a GPU."""
    name = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[autocast_dtype]
    return f"{name}-mixed" if device.type == "cuda" and autocast_dtype is not None else name


def _fit(trainer: Trainer, dist: Dist, out: Path) -> TrainState:
    """``trainer.fit()``; with several processes, a peer's death becomes an error that says so."""
    try:
        return trainer.fit()
    except Exception as err:
        if not (dist.enabled and is_collective_failure(err)):
            raise
        raise DistributedJobError(
            f"process {dist.rank} of {dist.world_size}: another process of this job stopped or stopped answering "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). The run cannot go on; "
            f"its last checkpoint in {out} continues with --resume") from err


def train_model(
    split: Any,
    options: TrainOptions | str,
    out_dir: str | os.PathLike | None = None,
    *,
    cache: ImageCache | None = None,
    face_cache: FaceCache | None = None,
    args: dict[str, Any] | None = None,
    **keywords: Any,
) -> TrainResult:
    """Train on ``split``'s train subset, choosing epochs on its val subset; save to ``options.out_dir``.

    ``split`` is a :class:`image_classifier.data.split.Split` (``classes``, ``subset(name)``,
    ``manifest_sha256``); its test subset is never read (``options.split``/``val``/``test`` are not
    used: :func:`train_folder` makes the split). ``options`` is a :class:`TrainOptions`, or an
    architecture name: ``train_model(split, arch, out_dir, **keywords)`` means
    ``TrainOptions(arch, out=out_dir, **keywords)`` (the ``train`` command's names: ``set=``,
    ``seed=``, ``weights=``, ``force=``, ...).
    Missing pretrained weights raise :class:`~image_classifier.errors.WeightsNotFoundError`
    (without ``weights``, torchvision's cache is used). ``cache`` is an :class:`ImageCache` shared
    across calls (e.g. by ``compare``); by default an in-memory one is used. ``args`` (e.g. the CLI
    arguments) are stored in the card. Same seed and data on the same machine give the same metrics.
    ``face_cache`` holds each file's faces for a face architecture (default: beside ``cache``'s disk
    store, or in memory).
    """
    if isinstance(options, TrainOptions):
        if out_dir is not None or keywords:
            raise TypeError("train_model(split, TrainOptions) takes no out_dir or option keywords: set them in the options")
    else:
        options = build(TrainOptions, "train_model", {"arch": options, "out": out_dir, **keywords})
    options.validate()
    arch, seed, weights, resume = options.arch, options.effective_seed(), options.weights, options.resume
    # Under torchrun: join the job's process group (a no-op for one process, or if joined already).
    dist, device = init_from_environment(options.device)
    configure(options.threads)
    if options.threads and torch.get_num_threads() != options.threads:  # configured earlier in this process
        torch.set_num_threads(options.threads)
    elif dist.enabled and device.type == "cpu" and not options.threads and not os.environ.get("IMAGE_CLASSIFIER_THREADS"):
        # torchrun starts each process with one thread (OMP_NUM_THREADS=1): share the cores instead.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local, 1)))
    wall0 = time.perf_counter()
    spec = get_arch(arch)
    recipe = options.effective_recipe()
    out = options.out_dir
    manifest = _manifest_hash(split)
    classes = [str(c) for c in split.classes]
    if len(classes) < 2:
        raise DatasetError(f"training needs at least 2 classes, the split has {len(classes)}: {classes}")

    if recipe.batch_size % dist.world_size:
        raise OptionError(
            f"the batch of {recipe.batch_size} images cannot be shared by {dist.world_size} processes: the global "
            f"batch is the recipe's and each process takes batch / {dist.world_size}; use --set batch_size=N with N "
            f"a multiple of {dist.world_size}, or another number of processes")

    # The run's identity, kept in its resume state: --resume refuses to continue another run.
    identity = {"arch": arch, "seed": seed, "classes": classes, "recipe": recipe.to_dict(),
                "split_manifest_sha256": manifest}
    payload = None
    writer = RunWriter(out, options.checkpoint_every)
    if resume:
        # Rank 0 reads the resume state and hands it to the others (their disks may not hold it).
        payload = broadcast_object(dist, _read_resume(writer, out) if dist.is_main else None)
        diff = [k for k in identity if payload.get(k) != identity[k]]
        if diff:
            raise ImageClassifierError(
                f"cannot resume the run in {out}: its {', '.join(diff)} differ from this command's. Resume with the "
                "same data, split, architecture, seed and recipe options, or start a new run (--force replaces it)"
            )
    elif dist.is_main and _holds_run(out):
        if not options.force:
            _refuse_existing(out)
        writer.clear()

    train_records, val_records = list(split.subset("train")), list(split.subset("val"))
    if not train_records:
        raise DatasetError("the split has no training images")
    if not val_records:
        raise DatasetError(
            "the split has no validation images: training needs them for early stopping and the "
            "learning-rate schedule (make a split with a validation fraction above 0)"
        )

    # The network: ImageNet weights for transfer architectures (never random ones), seeded init otherwise.
    resolved = None
    seed_global(seed, "init")
    if payload is not None:
        # Every weight comes from the resume state (which started from the ImageNet weights), so
        # a resumed run needs no weights file; the network is rebuilt with the options it had.
        net, arch_options = build_model(arch, len(classes), options=payload.get("arch_options") or {})
        pretrained_info = payload.get("pretrained_weights")
    else:
        if spec.pretrained is not None:
            resolved = resolve_pretrained(arch, spec.pretrained, weights)
        net, arch_options = build_model(arch, len(classes), pretrained=resolved is not None, resolved=resolved)
        pretrained_info = None
        if resolved is not None:
            pretrained_info = {"source": resolved.source, "sha256": sha256_file(resolved.source)}
    try:
        plan_phases(recipe, len(net.backbone))
    except ValueError as err:
        raise ImageClassifierError(f"bad recipe option: {err}") from None

    bf16 = recipe.precision == "bf16" and bf16_supported()
    if device.type == "cpu" and recipe.precision == "bf16" and not bf16:
        log.warning("this CPU has no native bf16: training %s in fp32 instead", arch)

    t0 = time.perf_counter()
    cache = cache if cache is not None else ImageCache()
    prep = spec.preprocessing
    train_set = cache.decode(train_records, prep)
    val_set = cache.decode(val_records, prep)
    if len(train_set) == 0 or len(val_set) == 0:
        raise DatasetError("none of the training or none of the validation images could be decoded; run `image-classifier check`")
    decode_seconds = time.perf_counter() - t0
    log.info("%s: %d train / %d val images decoded at %d px in %.1f s", arch, len(train_set), len(val_set),
             prep.input_size, decode_seconds)

    card_args = _jsonable(args if args is not None else {
        "seed": seed, "weights": weights, "recipe_overrides": options.set, "resume": resume,
    })
    base_card = {
        "architecture": arch,
        "arch_options": _jsonable(arch_options),
        "classes": classes,
        "preprocessing": prep.to_dict(),
        "recipe": recipe.to_dict(),
        "args": card_args,
        "seed": seed,
        "precision": None,  # set below, from the trainer's choice for this device
        "threads": torch.get_num_threads(),
        "device": describe_device(device).to_dict(),
        "distributed": dist.to_card(),
        "pretrained_weights": pretrained_info,
        "split_manifest_sha256": manifest,
        "data": {"train_images": len(train_set), "val_images": len(val_set),
                 "skipped": {**train_set.skipped, **val_set.skipped}},
        "versions": library_versions(),
    }

    def make_card(state: TrainState, status: str) -> dict[str, Any]:
        return {**base_card, "status": status, "history": state.history, "best": state.best,
                "train_seconds": round(state.seconds, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}

    writer.meta = {**identity, "arch_options": _jsonable(arch_options), "pretrained_weights": pretrained_info}
    trainer = Trainer(
        net, recipe, prep, train_set, val_set, seed=seed, name=arch, bf16=bf16, channels_last=options.channels_last,
        progress=options.progress, writer=writer if dist.is_main else None, make_card=make_card,
        device=device, amp=options.amp, dist=dist,
    )
    base_card["precision"] = _precision_name(trainer.autocast_dtype, device)
    setup_seconds = time.perf_counter() - wall0
    if payload is not None:
        best_state = None
        if dist.is_main and payload["state"].get("best") is not None:
            card = read_card(out)
            best_state = load_file(str(out / (card.weights_file or WEIGHTS_NAME)))
        trainer.load_resume(payload, broadcast_object(dist, best_state))
        log.info("%s: resuming at epoch %d (phase %d of %d)", arch, trainer.state.global_epoch + 1,
                 trainer.state.phase_index + 1, len(recipe.phases))
    trainer.state.seconds += setup_seconds

    state = _fit(trainer, dist, out)
    shutdown(dist)  # no collective follows: rank 0 alone scores, fits and writes what is left
    if trainer.best_state is None:
        raise ImageClassifierError(f"{arch}: no epoch was trained")
    if not dist.is_main:
        best = state.best or {}
        return TrainResult(model_dir=out, arch=arch, history=state.history, best_epoch=int(best.get("epoch", 0)),
                           best_val_accuracy=float(best.get("val_accuracy", 0.0)),
                           best_val_loss=float(best.get("val_loss", 0.0)), train_seconds=state.seconds,
                           peak_rss_mb=peak_rss_mb(), is_main=False)

    # The saved model predicts in fp32 from decoded images: measure it that way once.
    t0 = time.perf_counter()
    trainer.net.load_state_dict(trainer.best_state)
    inf_loss, inf_acc = trainer.evaluate(trainer.val_images, trainer.val_labels, 0, bf16=False)
    trainer.net.to("cpu")  # what follows (the face head, the saved weights) works on the CPU
    best = {**state.best, "inference_val_loss": inf_loss, "inference_val_accuracy": inf_acc}
    after = AFTER_TRAINING.get(spec.family)
    done = None
    if after is not None:
        done = after(trainer.net, train_records, val_records, val_set, prep, len(classes),
                     face_cache if face_cache is not None else FaceCache(cache.root), best, arch=arch,
                     weights=weights, image_cache=cache, seed=seed, progress=options.progress)
        trainer.best_state = {k: v.detach().clone() for k, v in trainer.net.state_dict().items()}
        best = done.best
    state.best = best
    state.seconds += time.perf_counter() - t0
    phases = []
    for p in recipe.phases:
        s = trainer.phase_stats.get(p.name)
        if s:
            phases.append({"name": p.name, "epochs": int(s["epochs"]), "seconds": s["seconds"],
                           "feature_seconds": s["feature_seconds"],
                           "images_per_s": s["images"] / s["seconds"] if s["seconds"] > 0 else 0.0})
    card = ModelCard.from_json({**make_card(state, "complete"), "phases": phases,
                                "decode_seconds": round(decode_seconds, 3), "train_seconds": round(state.seconds, 3)})
    if done is not None:
        for key, value in done.card.items():
            setattr(card, key, value)
        card.arch_options = {**(card.arch_options or {}), **done.arch_options}
    writer.save_best(trainer.best_state, card, final=True)
    writer.remove_resume()
    log.debug(
        "%s: best epoch %d (%s): val accuracy %.3f, val loss %.4f; trained in %s; peak RSS %.0f MB; model saved to %s",
        arch, best["epoch"], best["phase"], best["val_accuracy"], best["val_loss"], fmt_seconds(state.seconds),
        peak_rss_mb(), out,
    )
    return TrainResult(
        model_dir=out, arch=arch, history=state.history, best_epoch=int(best["epoch"]),
        best_val_accuracy=float(best["val_accuracy"]), best_val_loss=float(best["val_loss"]),
        train_seconds=state.seconds, peak_rss_mb=peak_rss_mb(), phases=phases, card=read_card(out),
    )


def train_folder(data: str | os.PathLike, options: TrainOptions, *, args: dict[str, Any] | None = None) -> TrainResult:
    """Train on the class folders in ``data``: what ``image-classifier train`` and
    :func:`image_classifier.train` run.

    The split is ``options.split``, else (resuming) the run's own ``split.csv``, else a new one
    (seed/val/test), saved as ``split.csv`` beside the model so that ``evaluate`` and a later
    resume find it. Decoded images are cached in ``options.cache_dir`` (default:
    :func:`~image_classifier.fileio.default_cache_dir`) unless ``options.cache`` is False. Raises
    :class:`~image_classifier.errors.OptionError` for bad options or a missing folder, before any
    image is read.
    """
    options.validate()
    if not Path(data).is_dir():
        raise OptionError(f"{data} is not a folder (expected one sub-folder of images per class)")
    out = options.out_dir
    split_csv = options.split
    if split_csv is None and options.resume and (out / SPLIT_NAME).is_file():
        split_csv = out / SPLIT_NAME  # a resumed run continues on its own split
    dist, _device = init_from_environment(options.device)
    if not options.resume and not options.force and _holds_run(out):
        _refuse_existing(out)  # before the new split.csv replaces that model's
    # Rank 0 makes (and saves) the split, the other processes receive it: one split per job.
    split = None
    if dist.is_main:
        split = resolve_split(data, split_csv, seed=options.effective_seed(), val=options.val, test=options.test)
        if not options.resume:
            split.save(out / SPLIT_NAME)
    split = broadcast_object(dist, split)
    cache = ImageCache(cache_root(options.cache, options.cache_dir))
    return train_model(split, options, cache=cache, args=args)

