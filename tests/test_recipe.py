from __future__ import annotations

import pytest

from image_classifier.models import get_arch
from image_classifier.recipe import Recipe


def test_overrides_by_dotted_key_and_phase_name():
    recipe = get_arch("mobilenet_v2").default_recipe()
    changed = recipe.with_overrides(
        {"batch_size": "16", "augmentation.zoom": "0.1", "phases.finetune.lr": "3e-5", "phases.0.epochs": 2,
         "augmentation.horizontal_flip": "false"}
    )
    assert changed.batch_size == 16
    assert changed.augmentation.zoom == pytest.approx(0.1)
    assert changed.augmentation.horizontal_flip is False
    assert changed.phases[1].lr == pytest.approx(3e-5)
    assert changed.phases[0].epochs == 2
    assert recipe.batch_size == 32 and recipe.phases[0].epochs == 10, "the default must not change"


@pytest.mark.parametrize(
    ("key", "message"),
    [("bach_size", "unknown recipe key"), ("phases.warmup.lr", "no phase 'warmup'"),
     ("augmentation", "is a group"), ("phases.finetune", "name a field")],
)
def test_bad_override_keys_are_named(key, message):
    with pytest.raises(KeyError, match=message):
        get_arch("resnet50").default_recipe().with_overrides({key: "1"})


def test_bad_override_values_are_named():
    with pytest.raises(ValueError, match="batch_size: expected int"):
        get_arch("resnet50").default_recipe().with_overrides({"batch_size": "lots"})


def test_round_trip_through_dict():
    recipe = get_arch("resnet50").default_recipe()
    assert Recipe.from_dict(recipe.to_dict()) == recipe
