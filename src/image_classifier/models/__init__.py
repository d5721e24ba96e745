"""Architectures: a registry of name -> builder + preprocessing + default recipe (+ pretrained source)."""
from image_classifier.models.registry import ArchSpec, build_model, get_arch, list_archs, register_arch

__all__ = ["ArchSpec", "build_model", "get_arch", "list_archs", "register_arch"]
