"""Serving trained models: a web page and a JSON API (``image-classifier serve``).

The names load on first use (PEP 562): the command line reads :class:`~image_classifier.serve.options.ServeOptions`
without loading Flask or PyTorch.
"""
from __future__ import annotations

from image_classifier.lazy import lazy_names

#: Each public name -> the module that defines it.
_WHERE = {"ModelStore": "store", "create_app": "app", "discover": "store", "ServeOptions": "options"}
__all__ = sorted(_WHERE)

__getattr__ = lazy_names(__name__, _WHERE, globals())
