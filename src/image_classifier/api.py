"""The Python API in one call per task, the same engine as the command line (``train`` here;
``load_model`` beside it in :mod:`image_classifier`).

The engine is imported inside the functions: ``import image_classifier`` (which every command,
``--help`` included, runs first) would otherwise load torch: importing ``training`` takes 4-6 s on
the 2-core development machine, against 0.1 s for the whole of ``image-classifier --help``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from image_classifier.inference.classifier import Classifier


def train(data: str | os.PathLike, arch: str, out: str | os.PathLike | None = None, **options: Any) -> Classifier:
    """Train ``arch`` on ``data`` (a folder with one sub-folder of images per class) and return the
    trained model, loaded and ready to predict.

    The model is saved in ``out`` (default: ``models/<arch>`` under the working directory, as
    ``image-classifier train`` does), with the ``split.csv`` it was trained on beside it; load it
    again later with :func:`image_classifier.load_model`. ``options`` are
    :class:`~image_classifier.training.TrainOptions` fields, the ``train`` command's options by name:
    ``epochs``, ``batch_size``, ``set`` (recipe overrides such as ``{"phases.finetune.lr": 1e-5}``),
    ``seed``, ``weights`` (ImageNet weights file of a pretrained architecture), ``split``, ``val``,
    ``test``, ``resume``, ``force`` (replace a model already in ``out``), ``threads``, ``progress``, ...

    Raises :class:`~image_classifier.errors.OptionError` (a ``ValueError``) for an option that
    cannot work, before any image is read, and other
    :class:`~image_classifier.errors.ImageClassifierError` for unusable data.

    Example::

        import image_classifier as ic
        model = ic.train("photos", arch="mobilenet_v2", weights="weights/mobilenet_v2-b0353104.pth")
        model.predict(["new.jpg"])
    """
    from image_classifier.inference.loading import load_model
    from image_classifier.training import TrainOptions
    from image_classifier.trust.fit import train_and_fit

    # Trained, then calibrated on the validation split (the card's temperature): the returned
    # model's probabilities are calibrated.
    result, _ = train_and_fit(data, TrainOptions.from_kwargs(arch=arch, out=out, **options))
    # On the device it was trained on (``device``, a TrainOptions field: "auto" by default).
    return load_model(result.model_dir, device=options.get("device") or "auto")
