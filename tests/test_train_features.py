"""Cached frozen-prefix activations: BatchNorm folding and when folded copies are refreshed."""
from __future__ import annotations

import torch
from torch import nn

from image_classifier.preprocessing import Preprocessing
from image_classifier.recipe import Augmentation
from image_classifier.training.augment import Augmenter
from image_classifier.training.features import FeatureStore, fold_batchnorm

NO_AUGMENTATION = Augmentation(rotation=0.0, width_shift=0.0, height_shift=0.0, shear=0.0, zoom=0.0,
                               horizontal_flip=False)


def _backbone(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    for bn in (net[1], net[4]):  # non-trivial statistics, so a fold that ignored them would show
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def test_folding_batchnorm_keeps_the_function_and_removes_the_bn_layers():
    net = _backbone()
    x = torch.randn(4, 3, 12, 12)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)


def test_an_untraceable_block_is_used_unfolded():
    class DataDependent(nn.Module):  # control flow on values: torch.fx cannot trace it
        def forward(self, x):
            return x if x.sum() > 0 else -x

    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), DataDependent()).eval()
    assert fold_batchnorm(net) is net


def _store(backbone: nn.Sequential, images: torch.Tensor) -> FeatureStore:
    return FeatureStore(backbone, Preprocessing(12), Augmenter(NO_AUGMENTATION), images, images[:2],
                        seed=0, views=3, bf16=False, channels_last=False, batch_size=4)


def test_views_match_the_unfolded_backbone_and_follow_weight_changes():
    backbone = _backbone()
    images = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    store = _store(backbone, images)
    end = len(backbone)
    x = Preprocessing(12).normalize(images)
    with torch.no_grad():
        first = store.ensure_view(0, [3, end])
        torch.testing.assert_close(first[end], backbone(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(first[3], backbone[:3](x), rtol=1e-5, atol=1e-5)
        # With no augmentation every view is the same images: an unchanged backbone gives the same
        # activations from the folded copies it reuses...
        torch.testing.assert_close(store.ensure_view(1, [end])[end], first[end])
        # ...and a backbone updated in place (an optimizer step, a restored checkpoint) is folded again.
        backbone[3].weight.mul_(-2.0)
        changed = store.ensure_view(2, [end])[end]
        torch.testing.assert_close(changed, backbone(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(changed, first[end], atol=1e-3)
