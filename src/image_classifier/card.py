"""The model card (``model.json``), typed: read and written here and nowhere else.

Imports nothing heavy: the foundation's (``results`` uses :class:`Calibration` too).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from image_classifier.jsonable import Jsonable, json_field


@dataclass
class Calibration(Jsonable):
    """The temperature(s) fitted on the validation split (the card's ``calibration``, built by
    ``trust.fit``), with the validation NLL and ECE before and after. ``metrics.json`` keeps each
    model's too (:meth:`for_metrics`); the test-split figures are in ``results.TestMetrics``."""

    method: str = "temperature"
    temperature: float = 1.0
    face_temperature: float | None = None  # a face model's face head
    fitted_on: str = "validation"
    images: int = 0
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    face_images: int | None = json_field(default=None, omit="none")  # a face model's: answered by a face
    fallback_images: int | None = json_field(default=None, omit="none")  # ... and by its fallback network
    notes: list[str] | None = json_field(default=None, omit="none")  # e.g. why a temperature was kept at 1
    min_images: int | None = json_field(default=None, omit="none")  # fewer: the temperature is kept at 1

    def for_metrics(self) -> Calibration:
        """What ``metrics.json`` has always kept of it: no image counts, the notes even when none."""
        return replace(self, face_images=None, fallback_images=None, notes=list(self.notes or []), min_images=None)
