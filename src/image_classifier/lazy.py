"""Package names that load their module on first use (PEP 562), for the packages whose light parts
the command line reads (``faces.thresholds``, ``people.options``, ``serve.options``) without loading
dlib, Flask or PyTorch through the package's ``__init__``."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, where: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: a public name (``where``: name -> the sub-module
    that defines it) is imported from its sub-module when first read, then kept in ``namespace``
    (the package's ``globals()``), so it is looked up once."""
    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value
        return value
    return __getattr__
