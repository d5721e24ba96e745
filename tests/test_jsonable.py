"""image_classifier.jsonable: dataclasses to and from JSON by their fields and type hints."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from image_classifier.jsonable import Jsonable, from_json, json_field, to_json


@dataclass
class Point(Jsonable):
    x: float
    y: float = 0.0


@dataclass
class Extra(Jsonable):
    kind: str
    note: str = ""


@dataclass(kw_only=True)
class Shape(Jsonable):
    name: str = json_field(key="class")  # the JSON key differs from the attribute
    label: str | None = json_field(default=None, omit="none")
    corners: list[Point] = field(default_factory=list)
    centre: Point | None = None  # written as null when None
    box: tuple[float, float] = (0.0, 0.0)
    tags: dict[str, int] = json_field(default_factory=dict, omit="empty")
    extra: Extra | None = json_field(default=None, flatten=True)
    count: int = 0


def test_round_trip_keeps_the_field_order_renamed_keys_and_nesting():
    shape = Shape(name="square", corners=[Point(0, 0), Point(1.5, 2)], centre=Point(0.75, 1), box=(1.5, 2.0),
                  tags={"a": 1}, extra=Extra("drawn", "by hand"), count=4)
    data = shape.to_json()
    assert list(data) == ["class", "corners", "centre", "box", "tags", "kind", "note", "count"]
    assert data["class"] == "square" and data["corners"][1] == {"x": 1.5, "y": 2}
    assert data["box"] == [1.5, 2.0] and data["kind"] == "drawn"
    back = Shape.from_json(json.loads(json.dumps(data)))
    assert back == shape and isinstance(back.box, tuple) and isinstance(back.corners[0], Point)


def test_optional_fields_are_omitted_or_null_as_declared():
    data = to_json(Shape(name="dot"))
    assert "label" not in data and "tags" not in data and "kind" not in data  # omitted: None / empty / flattened None
    assert data["centre"] is None  # not omitted: written as null
    back = from_json(Shape, data)
    assert back.label is None and back.extra is None and back.centre is None and back.tags == {}
    assert to_json(Shape(name="dot", label="here"))["label"] == "here"


def test_missing_keys_take_defaults_and_a_required_one_is_named():
    assert Shape.from_json({"class": "x"}) == Shape(name="x")
    assert Point.from_json({"x": 1, "y": None}) == Point(1, 0.0)  # null where None is not allowed: the default
    with pytest.raises(KeyError, match="'class'"):
        Shape.from_json({"name": "x"})  # the attribute's name is not the key
    with pytest.raises(TypeError, match="array"):
        Shape.from_json({"class": "x", "corners": {"x": 1}})


def test_numbers_are_kept_as_read_and_numpy_scalars_become_python_ones():
    point = Point.from_json({"x": 1, "y": 2.5})
    assert type(point.x) is int and json.dumps(point.to_json()) == '{"x": 1, "y": 2.5}'  # written back the same
    shape = Shape.from_json({"class": "x", "count": np.int64(3), "box": [np.float32(0.5), 1]})
    assert type(shape.count) is int and type(shape.box[0]) is float and shape.box == (0.5, 1)
