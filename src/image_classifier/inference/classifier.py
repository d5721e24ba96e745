"""A loaded model, ready to predict: preprocessing + network + class names, run by one concrete backend.

:func:`open_classifier` opens a saved model on the backend it is told (``torch``, ``onnx``, ...);
choosing one (``auto``) is :mod:`image_classifier.inference.selection`'s job and
:func:`image_classifier.load_model` does both. ``predict`` gives labels and ``predict_proba``
probabilities, as in scikit-learn.
"""
from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from image_classifier.data.decode import load_image
from image_classifier.faces import FaceCache
from image_classifier.inference.backends import Backend, TorchBackend, create_backend
from image_classifier.inference.calibration import card_temperature
from image_classifier.inference.explain import Explanation, explain_with_grad_cam
from image_classifier.inference.model import ImageSource, Model, Prepared
from image_classifier.inference.preprocess import images_to_array
from image_classifier.inference.rejection import RejectionRule, annotate, fit_rule
from image_classifier.preprocessing import Preprocessing
from image_classifier.saved_model import ModelCard, load_module


class Classifier(Model):
    """A loaded whole-image CNN: preprocessing + network + class names. ``predict`` gives labels,
    ``predict_proba`` probabilities (a :class:`~image_classifier.inference.model.Model`; the face
    model, :class:`~image_classifier.inference.face_model.FaceClassifier`, is one with a face half).

    The forward pass runs on ``backend`` (see :mod:`image_classifier.inference.backends`): eager
    PyTorch by default, ONNX Runtime when opened with ``backend="onnx"``. ``module`` is always the
    PyTorch network; for an ONNX-backed classifier it is only built when first asked for, so a
    server running ONNX Runtime never holds a second copy of the weights.
    """

    def __init__(self, module: torch.nn.Module | None, classes: Sequence[str], preprocessing: Preprocessing,
                 card: ModelCard | None = None, model_dir: Path | None = None, *,
                 backend: Backend | None = None, module_loader: Callable[[], torch.nn.Module] | None = None,
                 backend_reason: str = "", reject: bool = True) -> None:
        if module is None and module_loader is None:
            raise ValueError("Classifier needs a module or a module_loader")
        self._module = module.eval() if module is not None else None
        self._module_loader = module_loader
        self._module_lock = threading.Lock()
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.card = card if card is not None else ModelCard(
            architecture=type(module).__name__, classes=list(classes), preprocessing=preprocessing.to_dict())
        self.model_dir = model_dir
        self.backend: Backend = backend if backend is not None else TorchBackend(
            self.module, temperature=card_temperature(self.card))
        #: Why this backend runs the model (what "auto" measured, or "requested").
        self.backend_reason = backend_reason or "requested"
        #: The card's "none of these" rule (None: an older model, which never rejects).
        self.rejection_rule: RejectionRule | None = RejectionRule.from_card(self.card.rejection)
        #: Whether :meth:`predict` answers "unknown" for an image the rule rejects (``--no-reject``: False).
        self.reject = reject
        #: Set by :meth:`add_class` on the model it returns: what was added (an ``AddedPerson``).
        self.added: Any = None

    @classmethod
    def opens(cls, card: ModelCard) -> bool:
        """Whether a saved model with ``card`` is of this kind (see :mod:`image_classifier.inference.kinds`)."""
        return True

    @classmethod
    def open(cls, model_dir: Path | None, card: ModelCard, module: torch.nn.Module | None,
             network: Callable[[], torch.nn.Module], face_cache: FaceCache | None, **kwargs: Any) -> Classifier:
        """The saved model in ``model_dir`` with ``card`` (``network`` gives the PyTorch network
        when this kind needs it to open; ``kwargs`` are the constructor's)."""
        return cls(module, card.classes, Preprocessing.from_dict(card.preprocessing), card, model_dir, **kwargs)

    @property
    def module(self) -> torch.nn.Module:
        if self._module is None:
            with self._module_lock:
                if self._module is None:
                    self._module = self._module_loader().eval()  # type: ignore[misc]
        return self._module

    @module.setter
    def module(self, value: torch.nn.Module) -> None:
        self._module = value.eval()

    @property
    def features_network(self) -> torch.nn.Module | None:
        """The network whose penultimate features characterise an image (leave-one-class-out)."""
        return self.module

    @property
    def device(self) -> torch.device:
        """Where the forward pass computes: the torch backend's device; the CPU for ONNX Runtime."""
        return getattr(self.backend, "device", None) or torch.device("cpu")

    def _like(self, module: torch.nn.Module | None, backend: Backend, module_loader: Any, reason: str) -> Classifier:
        """The same kind of model, sharing everything but what is given (the face half, for a face model)."""
        return type(self)(module, self.classes, self.preprocessing, self.card, self.model_dir, backend=backend,
                          module_loader=module_loader, backend_reason=reason, reject=self.reject)

    def with_backend(self, name: str, *, threads: int | None = None, device: torch.device | None = None
                     ) -> Classifier:
        """The same model on another concrete backend (sharing the PyTorch module and preprocessing),
        a torch backend on ``device`` (default: where this classifier computes)."""
        device = device if device is not None else (self.device if name.startswith("torch") else None)
        backend = create_backend(name, self.model_dir, self.card, lambda: self.module, threads=threads,
                                 device=device)
        return self._like(self._module, backend, self._module_loader or (lambda: self.module), "")

    def chosen(self, reason: str) -> Classifier:
        """This classifier kept to serve, ``reason`` saying why its backend was chosen. On ONNX
        Runtime it lets go of the PyTorch module that measuring the backends loaded (memory); the
        module is rebuilt from the files if ever asked for."""
        module = self._module if self.backend_name.startswith("torch") else None
        loader = self._module_loader
        if module is None and self.model_dir is not None:
            loader = functools.partial(load_module, self.model_dir, self.card)
        return self._like(module, self.backend, loader, reason)

    @property
    def temperature(self) -> float:
        """The calibration temperature of the network's probabilities (the card's; 1.0 when the
        model was never calibrated). Every probability this classifier gives is calibrated."""
        return card_temperature(self.card)

    def temperatures(self, details: Sequence[dict[str, Any]] | None, n: int,
                     card: ModelCard | None = None) -> np.ndarray:
        """The temperature that made each of ``n`` rows answered with ``details``, by ``card``'s
        calibration (default this model's): the network's, for every row."""
        return np.full(n, card_temperature(self.card if card is None else card))

    def fit_temperatures(self, logprobs: np.ndarray, labels: np.ndarray, details: Sequence[dict[str, Any]],
                         calibrate: Callable[[np.ndarray, np.ndarray], Any]
                         ) -> tuple[dict[str, Any], np.ndarray, list[str], dict[str, Any]]:
        """This model's temperatures fitted by ``calibrate`` (``trust.temperature.calibrate``) on
        validation ``logprobs`` with ``labels``: (their card keys, each row's temperature, notes,
        further card keys)."""
        fit = calibrate(logprobs, labels)
        entry = {"temperature": round(fit.temperature, 6)}
        return entry, np.full(len(labels), fit.temperature), ([] if fit.fitted else [fit.reason]), {}

    def fit_rejection_rule(self, uncalibrated_probs: np.ndarray, details: Sequence[dict[str, Any]],
                           keep: float) -> RejectionRule:
        """The "none of these" rule fitted on validation predictions (probabilities with the
        temperature taken out, as :meth:`judge` scores them): see :mod:`.rejection`."""
        return fit_rule(uncalibrated_probs, details, keep)

    @property
    def arch(self) -> str:
        return str(self.card.architecture)

    @property
    def decode_key(self) -> tuple[str, int]:
        """What :meth:`decode` produces: equal keys mean a decoded image can be shared."""
        return ("image", self.preprocessing.input_size)

    def decode(self, source: ImageSource, *, max_pixels: int | None = None) -> Any:
        """One image made ready for :meth:`predict`: decoded at the input size (JPEG draft mode).
        Raises :class:`~image_classifier.errors.UnreadableImageError` for bad input."""
        return self._load_picture(source, max_pixels)

    def _load_picture(self, source: ImageSource, max_pixels: int | None = None) -> Image.Image:
        """The picture itself, decoded at the input size (JPEG draft mode); a PIL image as it is."""
        if isinstance(source, Image.Image):
            return source
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        return load_image(source, target_size=self.preprocessing.input_size, **kwargs)

    def preprocess_array(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Decode (when given paths/bytes; JPEGs in draft mode), resize once and normalise into a
        (N, 3, H, W) float32 array, with numpy only (see :mod:`image_classifier.inference.preprocess`)."""
        return images_to_array(self.preprocessing, [self._load_picture(img) for img in images])

    forward_input = preprocess_array  # the network's input for pictures: what timing the forward pass needs

    def preprocess(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Decode (when given paths/bytes), resize and normalise into a (N, 3, H, W) float batch."""
        return torch.from_numpy(self.preprocess_array(images))

    def predict_tensor(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        """Class probabilities for an already preprocessed batch, computed by ``self.backend``."""
        return self.backend.predict_tensor(batch)

    def prepare(self, images: Sequence[Any]) -> Prepared:
        """Everything before the backend's forward pass, for images (sources or :meth:`decode`
        results): every image goes to the backend."""
        return Prepared(self.preprocess_array(images), list(range(len(images))), {}, [{} for _ in images])

    def finish(self, prepared: Prepared, forward: np.ndarray | None) -> np.ndarray:
        """Probabilities for every prepared image, from the backend's ``forward`` output for
        ``prepared.rows`` and the answers :meth:`prepare` already had."""
        # Zeros, not garbage, for an image neither path answered (a cascade skips a member's forward pass).
        out = np.zeros((prepared.size, len(self.classes)), dtype=np.float32)
        if prepared.rows:
            if forward is None:  # numpy would write NaN rows without a word
                raise ValueError(f"{len(prepared.rows)} prepared images need the forward pass's output, and none was given")
            out[prepared.rows] = forward
        for i, probs in prepared.direct.items():
            out[i] = probs
        return out

    def judge(self, probabilities: np.ndarray, details: list[dict[str, Any]]) -> list[bool]:
        """Add the "none of these" answer (``unknown``, ``closest``, ``rejection``) to each image's
        details dict, in place, from its probabilities; returns the ``unknown`` flags. For callers
        that run :meth:`prepare` and :meth:`finish` themselves (the web server)."""
        rule = self.rejection_rule if self.reject else None
        scored = self.uncalibrated(probabilities, details) if rule is not None else None
        return annotate(probabilities, details, self.classes, rule, scored)

    def explain(self, image: ImageSource, *, target: str | int | None = None, decoded: Any = None,
                max_side: int = 512) -> Explanation:
        """Grad-CAM of the network for ``image`` (see :func:`image_classifier.inference.explain.explain`)."""
        photo = decoded if decoded is not None else self.decode(image)
        return explain_with_grad_cam(self.module, self.preprocessing, self.classes, image, photo, target, max_side)

    def shortcut_inputs(self, variant: str, images: Sequence[Image.Image], analyses: Sequence[Any],
                        grey: Callable[[int], np.ndarray | None]) -> list[Any]:
        """What this model predicts for the shortcut audit's ``variant`` of test pictures: the pictures."""
        return list(images)

    def predict_labels(self, images: Sequence[ImageSource | Any], batch_size: int = 32) -> list[str]:
        """Deprecated: :meth:`predict` gives the labels now (and :meth:`predict_proba` the probabilities)."""
        warnings.warn("Classifier.predict_labels is deprecated and will be removed in the next release: "
                      "use predict (labels) or predict_proba (probabilities)", DeprecationWarning, stacklevel=2)
        return self.predict(images, batch_size)
