"""A PyTorch classifier to an ONNX file: network + softmax, dynamic batch, metadata inside.

Exporter: PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``). In torch
2.14 the default is the ``torch.export``-based exporter, which needs the extra ``onnxscript``
package; for these plain feed-forward CNNs (no data-dependent control flow) the TorchScript tracer
gives the same operator graph, needs nothing beyond torch and onnx, and is fast (a second for
MobileNetV2). torch is pinned in pyproject.toml, so its deprecation cannot surprise us; moving to
``dynamo=True`` later is a one-line change plus ``onnxscript`` in the dependencies.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from image_classifier.export.options import DEFAULT_OPSET, check_opset
from image_classifier.inference.backends import ONNX_FEATURES, ONNX_INPUT, ONNX_OUTPUT
from image_classifier.inference.onnx_metadata import set_metadata

log = logging.getLogger(__name__)



class WithSoftmax(nn.Module):
    """The exported graph ends in ``softmax(logits / temperature)``, so every runtime returns the
    calibrated probabilities ``Classifier.predict_proba`` does (the temperature is the card's)."""

    def __init__(self, net: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return self.probabilities(logits)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature != 1.0:  # an uncalibrated model's graph stays exactly what it was
            logits = logits / self.temperature
        return torch.softmax(logits, dim=1)


class WithFeatures(WithSoftmax):
    """:class:`WithSoftmax` that also returns the backbone's pooled output: a face model's picture
    distances are measured on it (see ``models.face_embedding.picture_distances``)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        pooled = self.net.backbone(x)
        return self.probabilities(self.net.head(pooled)), pooled


def export_onnx(module: nn.Module, input_size: int, out_path: str | os.PathLike, *,
                opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None,
                doc: str | None = None, temperature: float = 1.0, features: bool = False) -> Path:
    """Write ``module`` (+ softmax of the logits divided by ``temperature``) as ONNX to
    ``out_path`` atomically; returns the path. ``metadata`` should record the same temperature
    (:func:`~image_classifier.inference.onnx_metadata.card_metadata` does, from the card).

    Input ``input``: float32 (batch, 3, input_size, input_size), normalised as the model's
    preprocessing says; output ``probabilities``: float32 (batch, num_classes), and with ``features``
    (a model that ``reads_features``: a face model's picture distances) a second output
    ``features``: float32 (batch, d), the pooled features. The batch dimension is dynamic, so one
    file serves single requests and batches.
    """
    opset = check_opset(opset)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    outputs = [ONNX_OUTPUT, ONNX_FEATURES] if features else [ONNX_OUTPUT]
    wrapped = (WithFeatures if features else WithSoftmax)(module, temperature).eval()
    # Batch 2 for tracing: with batch 1 some exporters bake "1" into Reshape/Flatten shapes.
    example = torch.zeros(2, 3, input_size, input_size)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter announces its own deprecation on every call: see module docstring.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                wrapped, (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=[ONNX_INPUT], output_names=outputs,
                dynamic_axes={ONNX_INPUT: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
                do_constant_folding=True,
            )
        model = onnx.load(str(tmp))
        if metadata:
            set_metadata(model, metadata, doc)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.debug("exported %s (%.1f MB, opset %d)", out_path, out_path.stat().st_size / 1e6, opset)
    return out_path


def graph_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Opset, operator counts and tensor shapes of an ONNX file (for the export report)."""
    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(node.op_type for node in model.graph.node)

    def shape(value: Any) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "nodes": len(model.graph.node),
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "inputs": {i.name: shape(i) for i in model.graph.input},
        "outputs": {o.name: shape(o) for o in model.graph.output},
    }
