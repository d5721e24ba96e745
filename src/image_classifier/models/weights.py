"""Finding ImageNet weights without a network.

Each pretrained architecture knows the weights files it can start from by name and SHA-256
(:class:`PretrainedSource`: torchvision's own file, plus any other known conversion). They are
looked for, in this order:

1. an explicit file (``--weights ARCH=PATH``; for ``train``: ``--weights PATH``);
2. the folders in ``$IMAGE_CLASSIFIER_WEIGHTS`` (one folder, or several separated by ``os.pathsep``);
3. torchvision's own cache, ``$TORCH_HOME/hub/checkpoints`` (by default
   ``~/.cache/torch/hub/checkpoints``), where torchvision keeps the files it downloads.

A file found under a known name is used only when its SHA-256 is the one the registry knows for
that name. Nothing is ever downloaded and a "pretrained" model never falls back to random
weights: when nothing is found the error names every place searched, the file names looked for,
and how to provide one.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.hub
import torchvision.models as tvm

from image_classifier.errors import ModelFormatError, WeightsNotFoundError
from image_classifier.fileio import sha256_file

log = logging.getLogger(__name__)

#: The environment variable naming the weights folder(s) searched before torchvision's cache.
WEIGHTS_ENV = "IMAGE_CLASSIFIER_WEIGHTS"


@dataclass(frozen=True)
class WeightsFile:
    """A weights file known by name: accepted under that name only when its content's SHA-256 starts
    with ``sha256`` (the full hex digest, or the leading digits torchvision puts in its file names).
    ``options`` are the builder options the file needs (e.g. ResNet block layout)."""

    name: str
    sha256: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PretrainedSource:
    """Where an architecture's ImageNet weights come from.

    ``torchvision_weights`` is the name of a torchvision weights enum member, e.g.
    ``"MobileNet_V2_Weights.IMAGENET1K_V1"``: its file (the name torchvision downloads it under) is
    the first one looked for. ``options`` are builder options implied by torchvision's file (e.g.
    ResNet block layout). ``alternatives`` are other files known to hold equivalent weights, looked
    for after torchvision's in each folder.
    """

    torchvision_weights: str
    options: dict = field(default_factory=dict)
    alternatives: tuple[WeightsFile, ...] = ()

    def torchvision_file(self) -> WeightsFile:
        enum_name, member = self.torchvision_weights.split(".")
        name = os.path.basename(getattr(getattr(tvm, enum_name), member).url)
        # torchvision names its files after the first digits of their SHA-256, and checks them so.
        match = torch.hub.HASH_REGEX.search(name)
        return WeightsFile(name, match.group(1) if match else "", dict(self.options))

    def known_files(self) -> tuple[WeightsFile, ...]:
        return (self.torchvision_file(), *self.alternatives)


@dataclass(frozen=True)
class SearchPlace:
    """A folder searched for weights, and how a message names it (the setting that chose it)."""

    folder: Path | None  # None: the setting is unset
    label: str

    def describe(self) -> str:
        if self.folder is None:
            return f"{self.label} (not set)"
        suffix = "" if self.folder.is_dir() else ", no such folder"
        return f"{self.folder} ({self.label}{suffix})"


@dataclass(frozen=True)
class FoundWeights:
    path: Path
    known: WeightsFile | None  # the registry's entry the file matched by name, if any
    place: str  # how it was found, for the log


@dataclass
class ResolvedWeights:
    state_dict: dict[str, torch.Tensor]
    source: str  # the file it came from
    options: dict  # builder options the file needs (from its JSON card, or the torchvision default)
    card: dict | None = None


def torchvision_cache() -> Path:
    """torchvision's weights cache: ``$TORCH_HOME/hub/checkpoints`` (torch's own rule for the default)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_places() -> list[SearchPlace]:
    """The folders searched when no explicit file is given, in order."""
    places: list[SearchPlace] = []
    configured = [p for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p]
    if configured:
        places += [SearchPlace(Path(p).expanduser(), f"${WEIGHTS_ENV}") for p in configured]
    else:
        places.append(SearchPlace(None, f"${WEIGHTS_ENV}"))
    places.append(SearchPlace(torchvision_cache(), "torchvision's cache, $TORCH_HOME/hub/checkpoints"))
    return places


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too: a file replaced in place is hashed again. A run checks the same
    # file several times (the resume identity, training, the card), and a ResNet-50 is 100 MB.
    return sha256_file(path)


def _sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _check_known(path: Path, known: WeightsFile) -> None:
    if not known.sha256:
        return
    actual = _sha256(path)
    if not actual.startswith(known.sha256.lower()):
        raise ModelFormatError(
            f"{path} is not the {known.name} this tool knows: its SHA-256 is {actual}, expected one "
            f"starting with {known.sha256} (a truncated download, or another file under that name). "
            "Replace or remove it."
        )


def find_pretrained(arch: str, source: PretrainedSource, explicit: str | os.PathLike | None) -> FoundWeights:
    """The weights file of ``arch``: ``explicit``, else the first known file in :func:`search_places`."""
    known_by_name = {k.name: k for k in source.known_files()}
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file for {arch} not found: {path}")
        known = known_by_name.get(path.name)
        if known is not None:
            _check_known(path, known)
        return FoundWeights(path, known, "given explicitly")
    places = search_places()
    for place in places:
        if place.folder is None:
            continue
        for known in source.known_files():
            path = place.folder / known.name
            if path.is_file():
                _check_known(path, known)
                return FoundWeights(path, known, place.label)
    names = " or ".join(known_by_name)
    searched = "; ".join(p.describe() for p in places)
    raise WeightsNotFoundError(
        f"ImageNet weights for {arch} were not found, and nothing is downloaded. Looked for {names} "
        f"in: {searched}. Put one of these files in a folder and set {WEIGHTS_ENV}=FOLDER, or in "
        f"torchvision's cache {torchvision_cache()}, or pass the file explicitly: --weights {arch}=PATH "
        f"(for `train`: --weights PATH)."
    )


def locate_pretrained(arch: str, source: PretrainedSource, explicit: str | os.PathLike | None) -> Path:
    """The file :func:`resolve_pretrained` would read for ``arch`` (without reading it), so that a
    caller can fingerprint the weights cheaply (``compare`` checks a finished model against them)."""
    return find_pretrained(arch, source, explicit).path


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


def resolve_pretrained(arch: str, source: PretrainedSource, explicit: str | os.PathLike | None) -> ResolvedWeights:
    """Load the ImageNet weights of ``arch`` from ``explicit`` or the first known file found."""
    found = find_pretrained(arch, source, explicit)
    # Builder options: torchvision's layout, then what the registry knows of this file, then the
    # file's own card (a plain file of unknown name is assumed to be in torchvision's layout).
    options = dict(source.options)
    if found.known is not None:
        options.update(found.known.options)
    card = _read_card(found.path)
    if card and card.get("block_variant"):
        options["block_variant"] = card["block_variant"]
    log.info("%s: ImageNet weights from %s (%s)", arch, found.path, found.place)
    return ResolvedWeights(_read_state_dict(found.path), str(found.path), options, card)
