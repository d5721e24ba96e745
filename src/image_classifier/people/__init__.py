"""Folders of people before any model: unlabelled photos grouped into people (``group``).

:func:`group_photos` is ``image-classifier group DIR --out OUT`` from Python; the clustering maths
is :mod:`image_classifier.faces.clustering` (and the suspect labels ``check`` lists,
:mod:`image_classifier.faces.suspects`).
"""
from __future__ import annotations

from image_classifier.people.grouping import GroupOptions, GroupResult, group_photos

__all__ = ["GroupOptions", "GroupResult", "group_photos"]
