"""Parsing shared by several subcommands' options (plain text in, typed values out)."""
from __future__ import annotations

from pathlib import Path

from image_classifier.errors import ImageClassifierError


def parse_arch_path(item: str, *, option: str = "--weights") -> tuple[str, Path]:
    """``"resnet50=weights/r50.pth"`` -> ``("resnet50", Path("weights/r50.pth"))``.

    The form ``train --weights`` and ``compare --weights`` take to say which architecture a weights
    file is for. Raises :class:`ImageClassifierError` (naming ``option``) when ``item`` is not
    ARCH=PATH with both parts present.
    """
    arch, sep, path = item.partition("=")
    if not sep or not arch.strip() or not path:
        raise ImageClassifierError(f"{option} {item!r}: write ARCH=PATH, e.g. resnet50=weights/resnet50.pth")
    return arch.strip(), Path(path)
