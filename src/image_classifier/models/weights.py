"""Finding ImageNet weights without a network: an explicit file, or torchvision's own cache.

Never downloads and never falls back to random weights: if nothing is found the user gets a
message naming the file expected and where to put it.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from image_classifier.errors import ModelFormatError, WeightsNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainedSource:
    """Where an architecture's ImageNet weights come from.

    ``torchvision_weights`` is the name of a torchvision weights enum member, e.g.
    ``"MobileNet_V2_Weights.IMAGENET1K_V1"``; its file is looked up in ``$TORCH_HOME/hub/checkpoints``.
    ``options`` are builder options implied by torchvision's file (e.g. ResNet block layout).
    """

    torchvision_weights: str
    options: dict = field(default_factory=dict)

    def cache_file(self) -> Path:
        import torchvision.models as tvm

        enum_name, member = self.torchvision_weights.split(".")
        url = getattr(getattr(tvm, enum_name), member).url
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


@dataclass
class ResolvedWeights:
    state_dict: dict[str, torch.Tensor]
    source: str  # the file it came from
    options: dict  # builder options the file needs (from its JSON card, or the torchvision default)
    card: dict | None = None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only: a weights file must never run pickled code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here means "not a usable weights file"
        raise ModelFormatError(f"cannot read weights file {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFormatError(f"{path} is not a state dict (a mapping of names to tensors)")
    return state


def _read_card(path: Path) -> dict | None:
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        return None
    try:
        return json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable weights card %s: %s", card_path, err)
        return None


def locate_pretrained(arch: str, source: PretrainedSource, explicit: str | os.PathLike | None) -> Path:
    """The file :func:`resolve_pretrained` would read for ``arch`` (without reading it), so that a
    caller can fingerprint the weights cheaply (``compare`` checks a finished model against them)."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file for {arch} not found: {path}")
        return path
    cached = source.cache_file()
    if cached.is_file():
        return cached
    raise WeightsNotFoundError(
        f"ImageNet weights for {arch} were not found, and nothing is downloaded. Either put "
        f"torchvision's file {cached.name} in {cached.parent} (torchvision's weights cache, "
        f"$TORCH_HOME/hub/checkpoints), or pass the file explicitly: "
        f"--weights {arch}=PATH (for `train`: --weights PATH). This project's machines have them in "
        f"../shared/weights/ (see its README.md)."
    )


def resolve_pretrained(arch: str, source: PretrainedSource, explicit: str | os.PathLike | None) -> ResolvedWeights:
    """Load the ImageNet weights of ``arch`` from ``explicit`` or torchvision's cache."""
    path = locate_pretrained(arch, source, explicit)
    if explicit is not None:
        card = _read_card(path)
        options = dict(source.options)
        if card and card.get("block_variant"):
            options["block_variant"] = card["block_variant"]
        elif arch == "resnet50":
            # A plain file without a card is assumed to be in torchvision's own (v1.5) layout.
            options.setdefault("block_variant", "v1.5")
        log.info("%s: ImageNet weights from %s", arch, path)
        return ResolvedWeights(_read_state_dict(path), str(path), options, card)
    log.info("%s: ImageNet weights from torchvision's cache %s", arch, path)
    return ResolvedWeights(_read_state_dict(path), str(path), dict(source.options))
