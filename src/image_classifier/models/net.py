"""The one network shape every architecture is built into: ``backbone`` then ``head``.

Training relies on this shape: ``backbone`` is an ``nn.Sequential`` whose prefix can be frozen
(a recipe phase's ``trainable_from`` is an index into it), so the frozen prefix's output can be
computed once and cached, and only the rest runs per step.
"""
from __future__ import annotations

import torch
from torch import nn


class ClassifierNet(nn.Module):
    def __init__(self, backbone: nn.Sequential, head: nn.Module, num_features: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def set_trainable_from(self, index: int | None) -> None:
        """Freeze ``backbone[:index]`` (all of it when ``index`` is None); the rest and the head train.

        Frozen BatchNorm layers also stop updating their running statistics: ``train()`` below
        keeps them in eval mode, as Keras does for layers with ``trainable=False``.
        """
        cut = len(self.backbone) if index is None else index
        for i, block in enumerate(self.backbone):
            block.requires_grad_(i >= cut)
        self.head.requires_grad_(True)
        self._frozen_prefix = cut

    @property
    def frozen_prefix(self) -> int:
        return getattr(self, "_frozen_prefix", 0)

    def train(self, mode: bool = True) -> ClassifierNet:
        super().train(mode)
        if mode:
            for block in self.backbone[: self.frozen_prefix]:
                block.eval()
        return self
