"""Folders of people before any model: unlabelled photos grouped into people (``group``).

:func:`group_photos` is ``image-classifier group DIR --out OUT`` from Python, :class:`GroupOptions`
its options (declared once: :mod:`image_classifier.people.options`); the clustering maths is
:mod:`image_classifier.faces.clustering` (and the suspect labels ``check`` lists,
:mod:`image_classifier.faces.suspects`). The names load on first use (PEP 562), so that the command
line reads the options without loading dlib.
"""
from __future__ import annotations

from image_classifier.lazy import lazy_names

#: Each public name -> the module that defines it.
_WHERE = {"GroupOptions": "options", "GroupResult": "grouping", "group_photos": "grouping"}
__all__ = sorted(_WHERE)

__getattr__ = lazy_names(__name__, _WHERE, globals())
