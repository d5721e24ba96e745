"""Dropout whose masks are drawn per sample, so they do not depend on the number of processes.

``nn.Dropout`` draws one mask for the whole batch from the process's global generator: with two
processes each drawing for half the batch, the masks differ from one process drawing for all of it,
and so do the trained weights. While training, :func:`per_sample_dropout` swaps every
``nn.Dropout`` of a network for a :class:`SampleDropout` whose mask row i is a function of (run
seed, epoch, layer, index of sample i) only (:func:`~image_classifier.training.seeding.sample_uniforms`).
It has no parameters, so the saved weights and the saved architecture are unchanged, and in eval
mode it is the identity, like ``nn.Dropout``.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from image_classifier.training.seeding import sample_uniforms


class SampleDropout(nn.Module):
    """``nn.Dropout(p)`` with per-sample masks; set :attr:`keys` before each training forward."""

    def __init__(self, p: float, layer: int) -> None:
        super().__init__()
        self.p = float(p)
        self.layer = layer
        #: (run seed, epoch, sample indices of the batch), set by the trainer for each step.
        self.keys: tuple[int, int, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.keys is None:  # trained outside the trainer: plain dropout
            return F.dropout(x, self.p, training=True)
        seed, epoch, indices = self.keys
        if indices.shape[0] != x.shape[0]:
            raise RuntimeError(f"dropout keys for {indices.shape[0]} samples, batch of {x.shape[0]}")
        u = sample_uniforms(seed, indices.to(x.device), x[0].numel(), "dropout", epoch, self.layer)
        keep = (u >= self.p).reshape(x.shape)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}"


def _dropout_slots(net: nn.Module) -> list[tuple[nn.Module, str, nn.Dropout]]:
    return [(parent, name, child) for parent in net.modules() for name, child in parent.named_children()
            if type(child) is nn.Dropout]


@contextmanager
def per_sample_dropout(net: nn.Module) -> Iterator[list[SampleDropout]]:
    """Swap ``net``'s ``nn.Dropout`` modules for :class:`SampleDropout` (numbered in module order)
    for the duration of the block; yields them so the caller can set their keys."""
    slots = _dropout_slots(net)
    swapped = []
    for layer, (parent, name, old) in enumerate(slots):
        new = SampleDropout(old.p, layer)
        new.train(old.training)
        setattr(parent, name, new)
        swapped.append(new)
    try:
        yield swapped
    finally:
        for (parent, name, old), new in zip(slots, swapped):
            old.train(new.training)
            setattr(parent, name, old)
