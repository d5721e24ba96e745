"""The study's augmentation on uint8 batches, and the frozen-prefix activations it feeds."""
from __future__ import annotations

import math

import pytest
import torch

from image_classifier.recipe import Augmentation
from image_classifier.training.augment import Augmenter, keras_affine_matrices
from image_classifier.training.features import run_segments
from image_classifier.training.seeding import sample_uniforms

NONE = dict(rotation=0.0, width_shift=0.0, height_shift=0.0, shear=0.0, zoom=0.0)


def _images(n=6, size=16, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _idx(n):
    return torch.arange(n)


def test_no_transform_keeps_pixels_and_flip_mirrors_about_half():
    x = _images(n=64)
    out = Augmenter(Augmentation(**NONE))(x, 0, _idx(len(x))) * 255
    same = [torch.allclose(out[i], x[i].float(), atol=1e-3) for i in range(64)]
    mirrored = [torch.allclose(out[i], x[i].flip(-1).float(), atol=1e-3) for i in range(64)]
    assert all(s != m for s, m in zip(same, mirrored)), "each image is either unchanged or mirrored"
    assert 16 <= sum(mirrored) <= 48
    no_flip = Augmenter(Augmentation(**NONE, horizontal_flip=False))(x, 0, _idx(len(x)))
    assert torch.allclose(no_flip * 255, x.float(), atol=1e-3)


def test_each_image_gets_its_own_transform_drawn_from_the_study_ranges():
    aug = Augmentation()
    m = keras_affine_matrices(aug, sample_uniforms(1, _idx(2000), 7, "test"), 224)
    assert m.shape == (2000, 2, 3)
    assert len({tuple(row.flatten().tolist()) for row in m}) == 2000
    # Shifts are fractions of the size (0.2 -> at most 0.4 in affine_grid's [-1, 1] units, rotated).
    assert m[:, :, 2].abs().max() <= 2 * 0.2 * math.sqrt(2) + 1e-6
    assert m[:, :, 2].abs().max() > 0.3
    # |det| = zx * zy * cos(shear): zoom factors within [0.7, 1.3].
    det = torch.linalg.det(m[:, :, :2].double()).abs()
    assert det.min() >= 0.7 * 0.7 * math.cos(math.radians(0.2)) - 1e-6 and det.max() <= 1.3 * 1.3 + 1e-6


def test_a_pure_shift_moves_the_picture_and_repeats_the_edge():
    x = torch.zeros(1, 3, 20, 20, dtype=torch.uint8)
    x[..., :, 10:] = 200  # right half bright
    out = Augmenter(Augmentation(**{**NONE, "width_shift": 0.25}, horizontal_flip=False))(x, 3, _idx(1))[0, 0] * 255
    boundary = int((out[10] > 100).nonzero()[0])  # first bright column
    assert boundary != 10, "the picture moved sideways"
    assert out[:, 0].max() < 1 and out[:, -1].min() > 199, "outside the image the nearest edge is repeated"


@pytest.mark.parametrize("engine", ["batched", "torchvision"])
def test_engines_are_deterministic_given_the_seed_and_leave_the_global_rng_alone(engine):
    x = _images()
    aug = Augmenter(Augmentation(engine=engine))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = aug(x, 9, _idx(6), "epoch", 0)
    assert torch.equal(torch.get_rng_state(), before)
    b = aug(x, 9, _idx(6), "epoch", 0)
    c = aug(x, 10, _idx(6), "epoch", 0)
    d = aug(x, 9, _idx(6), "epoch", 1)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)
    assert a.dtype == torch.float32 and a.shape == x.shape and 0 <= a.min() and a.max() <= 1


@pytest.mark.parametrize("engine", ["batched", "torchvision"])
def test_an_image_is_augmented_the_same_in_any_batch(engine):
    # What makes one process and two processes (each with half the batch) train alike: an image's
    # transform depends on its index in the training set, not on its batch or its place in it.
    x = _images(n=8)
    aug = Augmenter(Augmentation(engine=engine))
    whole = aug(x, 4, _idx(8), "epoch", 2)
    order = torch.tensor([5, 1, 7])
    part = aug(x[order], 4, order, "epoch", 2)
    assert torch.allclose(part, whole[order], atol=1e-6)
    assert not torch.allclose(whole[0], whole[1])


def test_prefix_activations_continue_exactly_into_the_rest_of_the_network():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3), torch.nn.Flatten()).eval()
    x = torch.randn(2, 3, 10, 10)
    acts = run_segments([(2, net[:2]), (5, net[2:5])], x)
    with torch.no_grad():
        assert torch.equal(acts[5], net(x))
        assert torch.equal(net[2:](acts[2]), acts[5])


@pytest.mark.parametrize("engine", ["batched", "torchvision"])
def test_nearest_sampling_only_copies_pixels_while_bilinear_blends_them(engine):
    # Two-valued images: any other value in the output was blended from neighbours.
    x = (torch.randint(0, 2, (8, 3, 32, 32), generator=torch.Generator().manual_seed(4)) * 200).to(torch.uint8)
    rotate_only = {**NONE, "rotation": 20.0}
    nearest = Augmenter(Augmentation(**rotate_only, engine=engine, interpolation="nearest"))(x, 5, _idx(8))
    bilinear = Augmenter(Augmentation(**rotate_only, engine=engine, interpolation="bilinear"))(x, 5, _idx(8))
    copied = {0, 200}
    assert set((nearest * 255).round().unique().int().tolist()) <= copied
    assert not set((bilinear * 255).round().unique().int().tolist()) <= copied

