"""``image-classifier sort``: a folder of photos answered by a saved model, into CSV files and class folders.

:func:`sort_folder` (with :class:`SortOptions`) is the command from Python; :mod:`.journal` is what
it keeps in the output folder so that an interrupted run continues where it stopped.
"""
from __future__ import annotations

from image_classifier.sorting.run import COPY_MODES, SortOptions, SortResult, sort_folder

__all__ = ["COPY_MODES", "SortOptions", "SortResult", "sort_folder"]
