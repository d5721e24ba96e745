"""Parsing shared by several subcommands' options (the values are checked by the library)."""
from __future__ import annotations

from pathlib import Path

from image_classifier.errors import ImageClassifierError


def parse_arch_path(text: str, *, flag: str = "--weights") -> tuple[str | None, Path]:
    """``ARCH=PATH`` -> (ARCH, PATH); a plain ``PATH`` (or an existing file whose name holds ``=``)
    -> (None, PATH). ``ARCH=`` or ``=PATH`` is an error naming ``flag``."""
    arch, sep, path = text.partition("=")
    if not sep or Path(text).exists():
        return None, Path(text)
    if not arch.strip() or not path:
        raise ImageClassifierError(f"{flag} {text!r}: write ARCH=PATH, e.g. resnet50=weights/resnet50.pth")
    return arch.strip(), Path(path)
