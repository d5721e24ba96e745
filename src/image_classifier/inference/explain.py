"""Why a model decided: Grad-CAM heat maps, or for a face model the face that decided.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of the last convolutional stage by the mean
gradient of the target class's logit over it, sums the weighted channels and keeps the positive
part: where the network saw evidence *for* that class. The stage is the output of the backbone's
last block that holds a convolution, after its activation, before pooling: for the scratch models
their last conv (+ ReLU), for MobileNetV2 (and face_embedding's fallback) the final 1x1 conv block,
for ResNet-50 the last bottleneck of layer4.

It runs on :attr:`Classifier.module`, the PyTorch network, whatever backend serves the model: for
an ONNX-served model the network is built on the first explanation only (cost only when asked).
No hook is registered: the backbone is split at that stage, the prefix runs without gradients and
the rest on a leaf tensor, so concurrent requests never share state. It computes where the
network is (a model loaded with ``device="cuda"`` explains on the GPU, in float32, whatever
autocast its backend uses) and the heat map comes back as a CPU numpy array.

For a ``face_embedding`` model whose answer came from a face, the explanation is that face's box
("decided by the face in this box"); when its fallback network answered, Grad-CAM of the fallback.

The overlay is drawn with numpy and Pillow (a jet colour map, half over the photo), at the photo's
size, at most :data:`OVERLAY_MAX_SIDE` pixels on its longer side (a JPEG may be decoded at a
reduced size, 1/2 to 1/8, that is still at least that big).
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from image_classifier.data.decode import load_image
from image_classifier.errors import ModelFormatError
from image_classifier.inference.backends import module_device
from image_classifier.inference.model import ImageSource, Model
from image_classifier.inference.preprocess import images_to_array
from image_classifier.preprocessing import Preprocessing

GRAD_CAM = "grad-cam"
FACE = "face"
#: The overlay's longer side at most (a phone photo's overlay stays a few hundred kB of PNG).
OVERLAY_MAX_SIDE = 512
#: What the API and the report say of a face decision (the page and report translate it).
FACE_TEXT = "decided by the face in this box"
# Modules that may follow the last conv inside the stage (its activation): their output is the
# stage's output. Pooling, flattening and everything after belong to the rest of the network.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Hardswish, nn.BatchNorm2d)
_HEAT_ALPHA = 0.5  # the heat map's share of each overlay pixel


@dataclass(frozen=True)
class ConvStage:
    """Where the backbone is split: ``backbone[:end]`` gives the stage's output; ``layer`` names
    the block with the last convolution (a name of ``net.named_modules()``)."""

    end: int
    layer: str


@dataclass(frozen=True)
class GradCam:
    heatmap: np.ndarray  # (H, W) float32 in [0, 1] at the network's input size
    target: int  # the class index explained
    layer: str


@dataclass
class Explanation:
    """Why one image got its answer: ``method`` "grad-cam" (``heatmap``, ``layer``) or "face"
    (``box``, in the photo's own pixels of ``image_size``); ``overlay`` is the picture to show."""

    method: str
    target: str
    overlay: Image.Image
    heatmap: np.ndarray | None = None
    layer: str | None = None
    box: list[float] | None = None
    image_size: tuple[int, int] | None = None

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.overlay.save(buf, "PNG", optimize=False)
        return buf.getvalue()

    def to_api(self) -> dict[str, Any]:
        """The API's ``explanation`` object (see serve/openapi.py)."""
        d: dict[str, Any] = {"method": self.method, "png_base64": base64.b64encode(self.png()).decode("ascii"),
                             "target": self.target}
        if self.method == GRAD_CAM:
            d["layer"] = self.layer
        else:
            d.update(box=self.box, image_size=list(self.image_size or ()), text=FACE_TEXT)
        return d


def conv_stage(net: nn.Module) -> ConvStage:
    """The last convolutional stage of a ``ClassifierNet`` (see the module's docstring)."""
    backbone = getattr(net, "backbone", None)
    if not isinstance(backbone, nn.Sequential) or not hasattr(net, "head"):
        raise ModelFormatError(f"{type(net).__name__} has no backbone/head: Grad-CAM explains ClassifierNet models")
    convs = [i for i, block in enumerate(backbone) if any(isinstance(m, nn.Conv2d) for m in block.modules())]
    if not convs:
        raise ModelFormatError(f"{type(net).__name__}'s backbone has no convolution for Grad-CAM to explain")
    end = convs[-1] + 1
    while end < len(backbone) and isinstance(backbone[end], _ACTIVATIONS):
        end += 1
    return ConvStage(end, f"backbone.{convs[-1]}")


def grad_cam(net: nn.Module, batch: torch.Tensor | np.ndarray, target: int | None = None) -> GradCam:
    """Grad-CAM of one preprocessed image ``batch`` (1, 3, H, W) for class ``target`` (default:
    the network's own top class), upsampled to (H, W) and scaled to [0, 1] (all zero when nothing
    speaks for the class)."""
    x = torch.as_tensor(batch, dtype=torch.float32).to(module_device(net))
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cam takes one image as a (1, 3, H, W) batch, not {tuple(x.shape)}")
    stage = conv_stage(net)
    backbone = net.backbone
    # Outside any caller's inference_mode: the rest of the network needs a graph.
    with torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            features = backbone[:stage.end](x.clone())
        features = features.detach().requires_grad_(True)
        # A clone, so an in-place activation in the rest never writes into the leaf.
        logits = net.head(backbone[stage.end:](features.clone()))
        index = int(logits[0].argmax()) if target is None else int(target)
        if not 0 <= index < logits.shape[1]:
            raise ValueError(f"target class {index} out of range (the model has {logits.shape[1]} classes)")
        (grads,) = torch.autograd.grad(logits[0, index], features)
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * features).sum(dim=1, keepdim=True))
        cam = nn.functional.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[0, 0]
        top = float(cam.max())
        heat = (cam / top) if top > 0 else torch.zeros_like(cam)
    return GradCam(heat.clamp(0, 1).cpu().numpy().astype(np.float32), index, stage.layer)


def jet(values: np.ndarray) -> np.ndarray:
    """The classic jet colour map (blue, cyan, yellow, red) of values in [0, 1], as uint8 RGB."""
    v = np.clip(values, 0, 1)[..., None] * 4
    rgb = np.clip(1.5 - np.abs(v - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).astype(np.uint8)


def heat_on_photo(heatmap: np.ndarray, size: tuple[int, int], preprocessing: Preprocessing) -> np.ndarray:
    """The network-input heat map laid onto a photo of ``size`` (w, h), the way ``preprocessing``
    mapped the photo to the input: stretched back for "squash"; for "center_crop" into the centre
    square, zero outside (the network never saw it)."""
    w, h = size
    heat = Image.fromarray(heatmap.astype(np.float32), mode="F")
    if preprocessing.resize_mode != "center_crop":
        return np.asarray(heat.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    out = np.zeros((h, w), dtype=np.float32)
    out[top:top + side, left:left + side] = np.asarray(heat.resize((side, side), Image.Resampling.BILINEAR))
    return out


def overlay_heatmap(photo: Image.Image, heat: np.ndarray) -> Image.Image:
    """``heat`` (the photo's h x w, in [0, 1]) in jet colours over ``photo``, half and half."""
    base = np.asarray(photo, dtype=np.float32)
    mixed = (1 - _HEAT_ALPHA) * base + _HEAT_ALPHA * jet(heat).astype(np.float32)
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8), "RGB")


def overlay_box(photo: Image.Image, box: list[float], image_size: tuple[int, int]) -> Image.Image:
    """``photo`` dimmed outside ``box`` (given in pixels of ``image_size``), the box outlined."""
    sx, sy = photo.width / image_size[0], photo.height / image_size[1]
    x0, y0, x1, y1 = (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))
    arr = np.asarray(photo, dtype=np.float32) * 0.4
    arr[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = np.asarray(photo, dtype=np.float32)[
        max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
    out = Image.fromarray(arr.astype(np.uint8), "RGB")
    width = max(2, round(max(photo.size) / 160))
    ImageDraw.Draw(out).rectangle((x0, y0, x1, y1), outline=(255, 215, 0), width=width)
    return out


def _photo_to_show(image: ImageSource, decoded: Image.Image, max_side: int) -> Image.Image:
    """The picture to draw on: the decoded one when it is big enough. A JPEG decoded for a small
    network (draft mode) can be a fraction of the photo: it is decoded again, at about the
    overlay's size (only when explaining, and only the file it came from)."""
    if isinstance(image, Image.Image) or max(decoded.size) >= max_side or hasattr(image, "read"):
        return decoded
    return load_image(image, target_size=max_side)


def target_index(classes: list[str], target: str | int | None) -> int | None:
    """The class index to explain: ``target`` by name or index (None: the model's own answer)."""
    if target is None or isinstance(target, int):
        return target
    try:
        return classes.index(target)
    except ValueError:
        raise ValueError(f"unknown class {target!r}; the model knows {', '.join(classes)}") from None


def explain(model: Model, image: ImageSource, *, target: str | int | None = None,
            decoded: Any = None, max_side: int = OVERLAY_MAX_SIDE) -> Explanation:
    """Why ``model`` answers what it does for ``image`` (a path, bytes or PIL image): its own
    explanation (Grad-CAM of a CNN, the deciding face's box of a face model).

    ``target``: the class to explain (name or index; default the model's own answer).
    ``decoded``: ``model.decode(image)`` when the caller has it already (a decode cache, the
    server), so the photo is not decoded twice.
    """
    return model.explain(image, target=target, decoded=decoded, max_side=max_side)


def explain_with_grad_cam(net: nn.Module, preprocessing: Preprocessing, classes: list[str], image: ImageSource,
                          photo: Image.Image, target: str | int | None, max_side: int) -> Explanation:
    """Grad-CAM of ``net`` for ``photo`` (``image`` decoded), drawn over the photo."""
    batch = images_to_array(preprocessing, [photo])
    cam = grad_cam(net, batch, target_index(classes, target))
    shown = display(_photo_to_show(image, photo, max_side), max_side)
    overlay = overlay_heatmap(shown, heat_on_photo(cam.heatmap, shown.size, preprocessing))
    return Explanation(GRAD_CAM, classes[cam.target], overlay, heatmap=cam.heatmap, layer=cam.layer,
                       image_size=photo.size)


def display(photo: Image.Image, max_side: int) -> Image.Image:
    """``photo`` in RGB, at most ``max_side`` pixels on its longer side."""
    photo = photo if photo.mode == "RGB" else photo.convert("RGB")
    if max(photo.size) > max_side:
        photo = photo.copy()
        photo.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return photo

