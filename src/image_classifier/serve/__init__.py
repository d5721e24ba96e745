"""Serving trained models: a web page and a JSON API (``image-classifier serve``).

The names load on first use (PEP 562): the command line reads :class:`~image_classifier.serve.options.ServeOptions`
without loading Flask or PyTorch.
"""
from __future__ import annotations

import importlib
from typing import Any

#: Each public name -> the module that defines it.
_WHERE = {"ModelStore": "store", "create_app": "app", "discover": "store", "ServeOptions": "options"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # looked up once
    return value
