"""Training: ``train_model(split, arch, out_dir, ...)`` -> a saved model directory and a ``TrainResult``.

Modules: ``cache`` (decode once), ``augment`` (the study's augmentation on uint8 tensors),
``features`` (frozen-part activations cached per augmented view), ``loop`` (phases, early
stopping, LR on plateau), ``checkpoint`` (best model + resume state, atomic), ``api``.
"""
from image_classifier.train.api import TrainResult, resolve_recipe, train_model
from image_classifier.train.cache import ImageCache, default_cache_dir

__all__ = ["ImageCache", "TrainResult", "default_cache_dir", "resolve_recipe", "train_model"]
