"""What ``compare`` does with a run directory that already holds models: reuse, resume or train.

A re-run with the same ``--out`` must give what an uninterrupted run gives, so a model is only
reused when everything that decides its weights is the same: architecture, classes, split manifest,
seed, recipe, the ImageNet weights file (by SHA-256), the face weights for a face model, and the
library versions. Per model:

* finished (card ``status: complete``) and matching: **reuse** it, no training;
* interrupted with a resume state (``resume.safetensors``) and matching: **resume** from it;
* nothing there (or an interrupted run that never reached its first checkpoint): **train**.

Any difference refuses the whole run before anything is trained or written, naming what differs,
so models of two configurations are never mixed in one report; ``--fresh`` removes compare's own
files (:func:`clear_run`) and starts over.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image_classifier.errors import ImageClassifierError, ModelFormatError
from image_classifier.fileio import sha256_file
from image_classifier.inference.face_model import changed_face_weights
from image_classifier.models.registry import get_arch
from image_classifier.models.weights import locate_pretrained
from image_classifier.recipe import Recipe
from image_classifier.runs import (
    BEST_NAME, CARD_NAME, MODELS_DIR, ONNX_INT8_NAME, ONNX_NAME, RESUME_NAME, SPLIT_NAME, split_of_run,
)
from image_classifier.saved_model import ModelCard, library_versions, read_card
from image_classifier.training.checkpoint import RUN_FILES, peek_resume_state

log = logging.getLogger(__name__)

#: Files ``compare`` writes into a model directory (``--fresh`` removes these and nothing else).
MODEL_FILES = (*RUN_FILES, ONNX_NAME, ONNX_INT8_NAME)


@dataclass(frozen=True)
class ModelDecision:
    """What happens to one architecture's model directory, and the line that says so."""

    arch: str
    action: str  # "reuse" | "resume" | "train" | "refuse"
    detail: str = ""
    #: Epochs finished in the resume state ("resume" only).
    epoch: int | None = None
    #: What differs from this run's configuration ("refuse" only).
    differences: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        if self.action == "reuse":
            return f"reusing {self.arch} (finished, card matches)"
        if self.action == "resume":
            return f"resuming {self.arch} from epoch {(self.epoch or 0) + 1} (its last checkpoint)"
        if self.action == "refuse":
            return f"{self.arch}: " + "; ".join(self.differences)
        return f"training {self.arch}" + (f" ({self.detail})" if self.detail else "")


# ---- identities --------------------------------------------------------------------------------

def expected_identity(arch: str, split: Any, recipe: Recipe, seed: int, weights: Path | None) -> dict[str, Any]:
    """What a model of ``arch`` trained by this run would record (the keys name it in messages)."""
    spec = get_arch(arch)
    weights_sha = None
    if spec.pretrained is not None:
        # Hash the file train_model would read: a different file under the same name is caught.
        weights_sha = sha256_file(locate_pretrained(arch, spec.pretrained, weights))
    return {
        "architecture": arch,
        "classes": [str(c) for c in split.classes],
        "split manifest": split.manifest_sha256,
        "seed": seed,
        "recipe": recipe.to_dict(),
        "ImageNet weights": weights_sha,
        "library versions": library_versions(),
    }


def card_identity(card: ModelCard) -> dict[str, Any]:
    return {
        "architecture": card.architecture,
        "classes": card.classes,
        "split manifest": card.split_manifest_sha256,
        "seed": card.seed,
        "recipe": card.recipe,
        "ImageNet weights": card.pretrained_sha256,
        "library versions": card.versions,
    }


def resume_identity(peek: dict[str, Any]) -> dict[str, Any]:
    """The part of the identity a resume state holds (used only when its card is missing)."""
    return {"architecture": peek.get("arch"), "classes": peek.get("classes"),
            "split manifest": peek.get("split_manifest_sha256"), "seed": peek.get("seed"),
            "recipe": peek.get("recipe")}


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:12] + "…" if isinstance(value, str) and len(value) == 64 else text  # shorten SHA-256s


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat(v, f"{prefix}.{i}"))
        return out
    return {prefix: value}


def differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Human-readable differences, e.g. ``recipe phases.0.epochs: 4 in the run, 6 now``."""
    out = []
    for key, ours in expected.items():
        if key not in found or found[key] == ours:
            continue
        theirs = found[key]
        if isinstance(ours, dict) and isinstance(theirs, dict):
            a, b = _flat(theirs), _flat(ours)
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    out.append(f"{key} {sub}: {_short(a.get(sub))} in the run, {_short(b.get(sub))} now")
        else:
            out.append(f"{key}: {_short(theirs)} in the run, {_short(ours)} now")
    return out


# ---- decisions ---------------------------------------------------------------------------------

def _read_card(model_dir: Path) -> ModelCard | None:
    if not (model_dir / CARD_NAME).is_file():
        return None
    try:
        return read_card(model_dir)
    except ModelFormatError as err:
        # Cards are written atomically, so this is not a kill mid-write: someone else's file.
        raise ImageClassifierError(f"{err}; or pass --fresh to start the run over") from err


def _face_differences(card: ModelCard) -> list[str]:
    """A finished face model also depends on the face weights its head was fitted with."""
    return ["face weights: other files in the run than installed now"] if changed_face_weights(card) else []


def decide(arch: str, model_dir: Path, expected: Callable[[], dict[str, Any]]) -> ModelDecision:
    """Reuse, resume, train, or refuse ``model_dir`` (``expected`` is only computed when needed)."""
    card = _read_card(model_dir)
    resume_path = model_dir / RESUME_NAME
    has_resume = resume_path.is_file()
    if card is None and not has_resume:
        return ModelDecision(arch, "train")
    peek = peek_resume_state(resume_path) if has_resume else None
    found = card_identity(card) if card is not None else resume_identity(peek or {})
    diffs = differences(expected(), found)
    finished = card is not None and card.status == "complete"
    if finished:  # a face model's card also names its face weights (none for the other kinds)
        diffs += _face_differences(card)
    if diffs:
        return ModelDecision(arch, "refuse", differences=tuple(diffs))
    if finished:
        # A kill between the final save and the removal of the resume state leaves both: the
        # card is the later of the two, so the model is finished.
        return ModelDecision(arch, "reuse")
    if peek is not None:
        return ModelDecision(arch, "resume", epoch=peek.get("epoch"))
    return ModelDecision(arch, "train", "its interrupted run left no checkpoint")


def discard_stale_resume(model_dir: Path) -> None:
    """Remove the resume state a finished model kept because the run was killed just after its
    final save (it can be gigabytes, and the card already says the model is finished)."""
    path = model_dir / RESUME_NAME
    if path.is_file():
        path.unlink()
        log.info("%s: removed the resume state left by a run killed after it finished", model_dir.name)


def refusal(run_dir: Path, refused: Iterable[ModelDecision]) -> ImageClassifierError:
    lines = "\n  ".join(d.line for d in refused)
    return ImageClassifierError(
        f"{run_dir} holds models from another configuration, so they cannot be reused or resumed:\n  {lines}\n"
        "Nothing was changed. Re-run with the options of that run to continue it, pass --fresh to delete "
        "its models and start over, or choose another --out."
    )


# ---- the run directory -------------------------------------------------------------------------

def has_previous_run(run_dir: Path) -> bool:
    models = run_dir / MODELS_DIR
    return split_of_run(run_dir) is not None or (models.is_dir() and any(models.iterdir()))


def clear_run(run_dir: Path, *, keep_split: bool = False) -> list[Path]:
    """Remove what ``compare`` wrote that a new run would otherwise reuse: each model directory's
    own files (then the directory, if nothing else is left in it), the ``best`` pointer and the
    split; the report files are simply overwritten at the end. Returns the paths removed."""
    removed: list[Path] = []
    models = run_dir / MODELS_DIR
    for model_dir in sorted(models.iterdir()) if models.is_dir() else []:
        if not model_dir.is_dir() or model_dir.is_symlink():
            continue
        for name in MODEL_FILES:
            if (model_dir / name).is_file():
                (model_dir / name).unlink()
                removed.append(model_dir / name)
        _rmdir_if_empty(model_dir)
    _rmdir_if_empty(models)
    best = run_dir / BEST_NAME
    if best.is_symlink() or best.is_file():
        best.unlink()
        removed.append(best)
    if not keep_split and (run_dir / SPLIT_NAME).is_file():
        (run_dir / SPLIT_NAME).unlink()
        removed.append(run_dir / SPLIT_NAME)
    return removed


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (the user's own files stay) or already gone


def check_writable(run_dir: Path, model_dirs: Iterable[Path]) -> None:
    """Fail before any work when the run directory (or a model directory in it) cannot be written,
    rather than after an hour of training with half of the files written."""
    for folder in [run_dir, *[d for d in model_dirs if d.exists()]]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise ImageClassifierError(
                f"cannot write to {folder} ({err.strerror or err}); make it writable, free some space, "
                "or choose another --out"
            ) from None
