"""Quantities written for people: the one place a duration becomes text."""
from __future__ import annotations


def fmt_seconds(s: float | None) -> str:
    """``4.2 s``, ``3.5 min``, ``1.25 h``; ``–`` when unknown (a table cell, a log line, an ETA)."""
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"
