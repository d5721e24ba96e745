"""Running a saved model: the same network on eager PyTorch or ONNX Runtime, the fastest chosen here.

Layers, each module importing only those before it (the saved files themselves are
:mod:`image_classifier.saved_model`'s):

0. :mod:`.onnx_metadata`: what an exported ONNX file says about itself (written by
   :mod:`image_classifier.export`, checked here when the file is opened);
1. :mod:`.backends`: ``TorchBackend``, ``OnnxBackend``, ``create_backend`` (batch -> probabilities);
2. :mod:`.classifier`: ``Classifier`` (a model on one concrete backend); :mod:`.kinds`: ``open_classifier``;
3. :mod:`.timing`: ``measure_backends``, ``SpeedConfig`` (latency and throughput of each backend);
4. :mod:`.selection`: ``choose_backend`` (``auto``: the fastest measured here, recorded in ``backend.json``);
5. :mod:`.loading`: ``load_model`` (resolves ``auto``, then opens), exported as ``image_classifier.load_model``.

This package's top level imports nothing heavy (no torch, no onnxruntime), because CLI parsers use
:data:`BACKENDS` and :mod:`.options` while building ``--help``: import the modules above
directly.
"""
from __future__ import annotations

from image_classifier.runs import BACKEND_RECORD_NAME

#: What ``--backend`` / ``load_model(backend=...)`` accept.
#: "auto" picks the fastest backend measured for the model on this machine (measured once, recorded
#: in ``MODEL_DIR/backend.json``; on a GPU, ``device="cuda"``, it is "torch" there without measuring).
#: "torch" is eager PyTorch fp32. "torch-bf16" is PyTorch with channels-last and bfloat16 (only
#: where the CPU has native bf16; on a GPU, bf16 autocast). "onnx" is ONNX Runtime on ``model.onnx``
#: and "onnx-int8" on ``model.int8.onnx`` (both written by ``image-classifier export``; CPU only).
BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")

#: Concrete backends ("auto" resolves to one of these).
CONCRETE_BACKENDS = BACKENDS[1:]

#: Backends that compute in reduced precision: "auto" considers them only when their accuracy was
#: checked against fp32 (see :mod:`image_classifier.inference.selection`).
REDUCED_PRECISION = ("torch-bf16", "onnx-int8")


BACKEND_HELP = (
    "inference backend: auto = on a GPU (see --device) eager PyTorch there, on the CPU the fastest "
    f"measured for this model on this machine (measured once, recorded in MODEL_DIR/{BACKEND_RECORD_NAME}); "
    "torch = eager PyTorch fp32; torch-bf16 = PyTorch bfloat16 + channels-last (on a GPU: bf16 autocast); "
    "onnx / onnx-int8 = ONNX Runtime on the CPU, on the files written by `image-classifier export` "
    "(default: %(default)s)"
)

