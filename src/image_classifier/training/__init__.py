"""Training: ``train_folder(data, TrainOptions(arch=...))`` or ``train_model(split, options)`` -> a
saved model directory and a ``TrainResult``; ``image_classifier.train(data, arch=..., **options)``
-> the trained model, loaded (:func:`image_classifier.api.train`). The package is called
``training``, not ``train``, so that importing it never replaces that function on the package.

Modules: ``options`` (:class:`TrainOptions`, every option of a run, checked in one place),
``cache`` (decode once), ``augment`` (the study's augmentation on uint8 tensors), ``features``
(frozen-part activations cached per augmented view), ``loop`` (phases, early stopping, LR on
plateau; devices and DistributedDataParallel steps), ``checkpoint`` (best model + resume state,
atomic), ``seeding`` (seeded streams, per-sample uniforms), ``dropout`` (per-sample masks),
``distributed`` (torchrun's process group and the few collectives the loop uses), ``launch``
(a model trained on N processes through torchrun), ``api``.

Reproducibility: the same seed, data, recipe, thread count, CPU and library versions give the same
metrics and the same weights, bit for bit, and a resumed run gives exactly what the uninterrupted
one would have (both are tested). Every random stream is derived from (seed, purpose, index): the
initial weights, each epoch's shuffling, and, per sample (seed, epoch, sample index), its
augmentation, dropout masks and cached view, so the number of processes under ``torchrun`` and the
device do not change them: 1 and 2 processes give the same weights up to float rounding (tested,
<= 1e-3). What can still change results: a different number of threads or another CPU (oneDNN splits reductions by thread
and picks kernels by instruction set; without native bf16 a "bf16" recipe runs in fp32, recorded
in the card as ``precision``), other torch/oneDNN versions, and bf16 itself (deterministic, but
not the same numbers as fp32).
"""
from typing import Any

from image_classifier.training.options import TrainOptions

__all__ = ["ImageCache", "TrainOptions", "TrainResult", "default_cache_dir", "resolve_recipe", "train_folder",
           "train_model"]


def __getattr__(name: str) -> Any:
    """The engine, imported on first use: ``train --help`` and ``compare --help`` import
    ``training.options``, which runs this file, and must not load torch."""
    if name not in __all__ or name == "TrainOptions":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from image_classifier.training import cache, run

    return getattr(run if hasattr(run, name) else cache, name)

