"""The objects that turn a preprocessed batch into class probabilities.

A :class:`Backend` has one job: ``predict_tensor(batch) -> probabilities``. The
:class:`~image_classifier.inference.classifier.Classifier` holds one, so decoding, resizing and
normalisation are shared and only the forward pass differs between backends.

Both backends are safe to call from several threads at once (the web server does): a PyTorch
module in inference mode keeps no per-call state, and ONNX Runtime documents ``InferenceSession.run``
as thread-safe. Each backend is created once per loaded model; nothing is rebuilt per request.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort
import torch

from image_classifier.card import ModelCard
from image_classifier.device import amp_dtype, describe_device, is_cuda, parse_device, resolve_device
from image_classifier.errors import ModelFormatError, OptionError
from image_classifier.inference.calibration import card_temperature
from image_classifier.inference.onnx_metadata import check_against_card
from image_classifier.fileio import sha256_file
from image_classifier.machine import bf16_supported
from image_classifier.runs import ONNX_INT8_NAME, ONNX_NAME

log = logging.getLogger(__name__)

#: Names of the graph's input and output in files written by ``image-classifier export``.
ONNX_INPUT = "input"
ONNX_OUTPUT = "probabilities"
#: The second output of a face model's ONNX graph: the pooled features its picture distances come from.
ONNX_FEATURES = "features"


@runtime_checkable
class Backend(Protocol):
    """Runs the network: ``predict_tensor`` maps a normalised (N, 3, H, W) float batch to
    (N, num_classes) float32 probabilities."""

    name: str

    def predict_tensor(self, batch: torch.Tensor | np.ndarray) -> np.ndarray: ...

    def predict_features(self, batch: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict_tensor` and the pooled features the head read (N, d), from the same pass
        (None where this backend cannot give them)."""
        ...

    def describe(self) -> str: ...


def inference_threads() -> int:
    """Threads one forward pass may use: ``IMAGE_CLASSIFIER_THREADS``, else PyTorch's setting
    (which :func:`image_classifier.runtime.configure` sets; it defaults to the physical cores)."""
    env = os.environ.get("IMAGE_CLASSIFIER_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            log.warning("ignoring IMAGE_CLASSIFIER_THREADS=%r (not a number)", env)
    return max(1, torch.get_num_threads())


#: The ONNX backends: ONNX Runtime's CPU execution provider only.
ONNX_BACKENDS = ("onnx", "onnx-int8")


def backend_device(backend: str, device: str | torch.device | None = "auto") -> torch.device:
    """The device ``backend`` runs on when ``device`` (``--device``) is asked for.

    The torch backends (and ``auto``) run on :func:`~image_classifier.device.resolve_device`'s
    answer. The ONNX backends run on the CPU only: ``auto`` means the CPU for them, and an explicit
    ``cuda`` is an :class:`~image_classifier.errors.OptionError` saying what to use instead (never
    a silent CPU run for a user who asked for the GPU)."""
    if backend in ONNX_BACKENDS:
        if parse_device(device)[0] == "cuda":  # asked for a GPU explicitly (not auto)
            raise OptionError(
                f"--backend {backend} --device {device}: the ONNX backends run on the CPU only (ONNX Runtime's "
                "CPU provider); use --backend torch or torch-bf16 to predict on the GPU, or --device cpu")
        return torch.device("cpu")
    return resolve_device(device)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s weights are (the CPU for a module without parameters)."""
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


class TorchBackend:
    """Eager PyTorch. ``bf16=True`` runs a bfloat16 copy of the network in channels-last layout,
    which oneDNN executes with native bf16 instructions on CPUs that have them.

    ``temperature`` is the model's calibration (the card's, see
    :mod:`image_classifier.inference.calibration`): the probabilities are ``softmax(logits / T)``,
    what the exported ONNX graph computes too.

    ``device`` (default the CPU): on a CUDA GPU the network itself is moved there in channels-last
    layout (so :attr:`Classifier.module` is the network that computes, and hooks on it see every
    pass), each batch is copied from pinned memory without blocking, and ``bf16=True`` runs it
    under bfloat16 autocast (float16 on a GPU without bf16) instead of a bf16 copy. The
    probabilities come back as a CPU numpy array on every device."""

    def __init__(self, module: torch.nn.Module, *, bf16: bool = False, temperature: float = 1.0,
                 device: torch.device | str | None = None) -> None:
        self.bf16 = bf16
        self.temperature = float(temperature)
        self.name = "torch-bf16" if bf16 else "torch"
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cuda = is_cuda(self.device)
        #: The autocast dtype on a GPU (None: fp32, and always None on the CPU, whose bf16 is a copy).
        self.autocast_dtype = amp_dtype(self.device) if self.cuda and bf16 else None
        module = module.eval()
        if self.cuda:
            # In place, not a copy: one network on the GPU, shared with Classifier.module.
            self.module = module.to(self.device, memory_format=torch.channels_last)
            return
        if bf16:
            if not bf16_supported():
                log.warning("this CPU has no native bfloat16: torch-bf16 will be slower than torch")
            # A copy: the fp32 module stays what ``Classifier.module`` returns (training,
            # FLOP counting and the fp32 backend need it unchanged).
            module = copy.deepcopy(module).to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        self.module = module

    def predict_tensor(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        return self._forward(batch, features=False)[0]

    def predict_features(self, batch: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and the backbone's pooled output (``module.backbone``, then ``module.head``)."""
        return self._forward(batch, features=True)

    @torch.inference_mode()
    def _forward(self, batch: torch.Tensor | np.ndarray, *, features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        if self.cuda:
            # Pinned host memory lets the copy run asynchronously; ``.cpu()`` at the end waits for it all.
            if batch.device.type == "cpu":
                batch = batch.pin_memory().to(self.device, non_blocking=True)
            batch = batch.to(self.device, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
        elif self.bf16:
            batch = batch.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        autocast = (torch.autocast(device_type="cuda", dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            if features:
                pooled = self.module.backbone(batch)
                logits = self.module.head(pooled)
            else:
                pooled, logits = None, self.module(batch)
        logits = logits.float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        probs = torch.softmax(logits, dim=1).cpu().numpy()
        return probs, None if pooled is None else pooled.float().cpu().numpy()

    def describe(self) -> str:
        if self.cuda:
            precision = (f"{str(self.autocast_dtype).removeprefix('torch.')} autocast, channels-last"
                         if self.autocast_dtype is not None else "float32, channels-last")
            return f"PyTorch {torch.__version__} eager ({precision}, {self.device}: {describe_device(self.device).name})"
        precision = "bfloat16, channels-last" if self.bf16 else "float32"
        return f"PyTorch {torch.__version__} eager ({precision}, {torch.get_num_threads()} threads)"


def session_options(threads: int | None = None, *, spin: bool = True) -> Any:
    """ONNX Runtime options for serving one model on a small CPU.

    - ``intra_op_num_threads`` is set explicitly: ORT's default is one thread per *logical* core
      of the whole machine, which ignores the process's thread setting and oversubscribes a
      container or a box that also decodes images;
    - one inter-op thread and sequential execution: a CNN is a chain of operators, there is nothing
      to run in parallel between them;
    - all graph optimisations (Conv+BN+activation fusion, constant folding, layout transforms);
    - ``spin=False`` stops idle worker threads from busy-waiting between calls. Spinning (ORT's
      default) is kept: on 2 cores it made batch-1 MobileNetV2 1.5x faster (1.92 against 2.88 ms,
      ``bench/inference_speed.py``); ``serve`` runs one thread per forward pass, where there is no
      worker thread to spin.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or inference_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OnnxBackend:
    """ONNX Runtime on the CPU. One ``InferenceSession`` per file, created here, reused for every
    call (``run`` is thread-safe)."""

    def __init__(self, path: str | os.PathLike, *, name: str = "onnx", threads: int | None = None,
                 spin: bool = True) -> None:
        self.path = Path(path)
        self.name = name
        self.threads = threads or inference_threads()
        if not self.path.is_file():
            raise ModelFormatError(f"{self.path} does not exist: run `image-classifier export {self.path.parent}`")
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(self.threads, spin=spin), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # noqa: BLE001 - ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
            raise ModelFormatError(
                f"{self.path} is not a usable ONNX model ({type(err).__name__}: {str(err).strip()[:300]}); "
                f"re-create it with `image-classifier export {self.path.parent}`"
            ) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelFormatError(f"{self.path}: expected one image input, found {len(inputs)} inputs")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        self.output_name = ONNX_OUTPUT if any(o.name == ONNX_OUTPUT for o in outputs) else outputs[0].name
        self.output_shape = list(next(o.shape for o in outputs if o.name == self.output_name))
        #: A face model's graph also gives the pooled features (exported since the picture bank).
        self.features_name = ONNX_FEATURES if any(o.name == ONNX_FEATURES for o in outputs) else None

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @staticmethod
    def _array(batch: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().numpy()  # shares memory: no copy for a contiguous float32 batch
        return np.ascontiguousarray(batch, dtype=np.float32)

    def predict_tensor(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: self._array(batch)})[0]

    def predict_features(self, batch: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, when the graph has the ``features`` output, the pooled features."""
        if self.features_name is None:
            return self.predict_tensor(batch), None
        probs, features = self.session.run([self.output_name, self.features_name],
                                           {self.input_name: self._array(batch)})
        return probs, features

    def describe(self) -> str:
        return f"ONNX Runtime {ort.__version__} CPU on {self.path.name} ({self.threads} threads)"


def onnx_path(model_dir: str | os.PathLike, card: ModelCard, name: str = "onnx") -> Path:
    """Where ``name``'s ONNX file is: as recorded in the card by export, else the default name."""
    record = card.export_record("onnx_int8" if name == "onnx-int8" else "onnx")
    default = ONNX_INT8_NAME if name == "onnx-int8" else ONNX_NAME
    return Path(model_dir) / record.get("file", default)


def open_onnx_backend(model_dir: str | os.PathLike, card: ModelCard, name: str = "onnx",
                      threads: int | None = None) -> OnnxBackend:
    """An :class:`OnnxBackend` for a saved model's exported file, checked against the model card:
    a missing, corrupted, replaced or foreign ``.onnx`` file raises ``ModelFormatError`` saying
    what to re-run, never silently predicts with the wrong network."""
    path = onnx_path(model_dir, card, name)
    record = card.export_record("onnx_int8" if name == "onnx-int8" else "onnx")
    flag = " --quantize int8" if name == "onnx-int8" else ""
    if not path.is_file():
        raise ModelFormatError(
            f"{model_dir} has no {path.name}: run `image-classifier export {model_dir}{flag}` "
            f"(or choose another --backend)"
        )
    expected = record.get("sha256")
    if expected and sha256_file(path) != expected:
        raise ModelFormatError(
            f"{path} does not match the checksum recorded when it was exported (corrupted or replaced); "
            f"re-run `image-classifier export {model_dir}{flag}`"
        )
    if name == "onnx-int8":
        check = card.accuracy_check(name) or {}
        if not check.get("accepted"):
            log.warning("%s: its accuracy was %s; predictions may be worse than fp32", path,
                        "not within the limit at export" if check else "never measured")
    backend = OnnxBackend(path, name=name, threads=threads)
    check_against_card(backend.metadata, card, path, input_shape=backend.input_shape,
                       output_shape=backend.output_shape)
    return backend


def create_backend(name: str, model_dir: str | os.PathLike | None, card: ModelCard,
                   module_loader: Callable[[], torch.nn.Module], *, threads: int | None = None,
                   device: torch.device | None = None) -> Backend:
    """Build the concrete backend ``name`` for a saved model. ``module_loader`` gives the PyTorch
    network and is only called by the torch backends, so an ONNX-served model never loads it.
    ``device``: where a torch backend computes (default the CPU); an ONNX backend refuses a GPU."""
    if name == "torch":
        return TorchBackend(module_loader(), temperature=card_temperature(card), device=device)
    if name == "torch-bf16":
        return TorchBackend(module_loader(), bf16=True, temperature=card_temperature(card), device=device)
    if name in ONNX_BACKENDS:
        if device is not None:
            backend_device(name, device)  # an OptionError on a GPU
        if model_dir is None:
            raise ValueError(f"backend {name!r} needs a saved model directory with an exported file")
        return open_onnx_backend(model_dir, card, name, threads=threads)
    raise ValueError(f"unknown backend {name!r}")
