"""Dataclasses to and from JSON, driven by their fields and type hints (``metrics.json``, ``model.json``).

:func:`to_json` writes a dataclass's fields in their order, nested dataclasses, lists, tuples and
dicts converted on the way; :func:`from_json` builds one back from its hints (``X | None``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, nested dataclasses; ``Any`` is left as read).
A key missing from the JSON, or null for a field that cannot be None, takes the field's default;
missing without a default is a ``KeyError`` naming the key. Numbers are kept as read (an int in a
float field stays an int), so a file read and written again is the same file.

Field metadata, given with :func:`json_field`:

- ``key``: the JSON key when it is not the attribute's name;
- ``omit``: ``"none"`` leaves the key out when the value is None, ``"empty"`` when it is empty
  (by default a None is written as null);
- ``flatten``: a nested dataclass written as keys of its parent, at the field's place;
- ``skip``: not part of the JSON at all (e.g. where a file was read from).

Imports nothing of the project: it is the foundation's.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

T = TypeVar("T")
_META = "json"


def json_field(*, key: str | None = None, omit: str | None = None, flatten: bool = False, skip: bool = False,
               **kwargs: Any) -> Any:
    """``dataclasses.field(**kwargs)`` with how the field is written in JSON (see the module)."""
    if omit not in (None, "none", "empty"):
        raise ValueError(f"omit must be None, 'none' or 'empty', not {omit!r}")
    return dataclasses.field(metadata={_META: {"key": key, "omit": omit, "flatten": flatten, "skip": skip}}, **kwargs)


def _meta(f: dataclasses.Field) -> dict[str, Any]:
    return f.metadata.get(_META) or {"key": None, "omit": None, "flatten": False, "skip": False}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def to_json(obj: Any) -> Any:
    """``obj`` as JSON-ready values: a dataclass as a dict of its fields (see the module)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            meta, value = _meta(f), getattr(obj, f.name)
            if meta["skip"] or (meta["omit"] == "none" and value is None) or (meta["omit"] == "empty" and not value):
                continue
            if meta["flatten"]:
                if value is not None:
                    out.update(to_json(value))
                continue
            out[meta["key"] or f.name] = to_json(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """An instance of dataclass ``cls`` from the dict :func:`to_json` wrote (see the module)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} is read from a JSON object, not {type(data).__name__}")
    hints, kwargs = _hints(cls), {}
    for f in dataclasses.fields(cls):
        meta = _meta(f)
        if meta["skip"] or not f.init:
            continue
        if meta["flatten"]:
            # An optional one is there when its first key is.
            nested = next(g for g in typing.get_args(hints[f.name]) or (hints[f.name],) if g is not type(None))
            first = dataclasses.fields(nested)[0]
            if not _optional(hints[f.name]) or data.get(_meta(first)["key"] or first.name) is not None:
                kwargs[f.name] = _build(nested, data)
            continue
        key = meta["key"] or f.name
        value = data.get(key)
        if value is None and not _optional(hints[f.name]):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyError(f"{cls.__name__} needs {key!r}")
            continue  # the default
        kwargs[f.name] = _value(hints[f.name], value, key)
    return cls(**kwargs)


def _build(cls: type[T], data: Mapping[str, Any]) -> T:
    """A nested dataclass, by its own ``from_json`` where it has one (a class may add to the reading)."""
    own = getattr(cls, "from_json", None)
    return own(data) if own is not None else from_json(cls, data)


def _optional(hint: Any) -> bool:
    return hint is Any or type(None) in typing.get_args(hint) and typing.get_origin(hint) in (Union, types.UnionType)


def _value(hint: Any, value: Any, where: str) -> Any:
    """``value`` read from JSON as ``hint`` says."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None or hint is Any:
        return value
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], value, where) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value)
    if origin is dict and not isinstance(value, Mapping) or origin in (list, tuple) and (
            isinstance(value, (str, Mapping)) or not hasattr(value, "__iter__")):  # (a caller's tuple or array will do)
        raise TypeError(f"{where!r} should be a JSON {'object' if origin is dict else 'array'}, not {value!r}")
    if origin is list:
        return [_value(args[0], v, where) for v in value] if args else list(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], v, where) for v in value)
        return tuple(_value(a, v, where) for a, v in zip(args, value)) if args else tuple(value)
    if origin is dict:
        return {k: _value(args[1], v, where) for k, v in value.items()} if args else dict(value)
    # Scalars as the hint says (numpy numbers, as callers pass them, become Python's), but an int
    # in a float field stays an int: the file read and written again is the same.
    if hint is float:
        return value if type(value) in (int, float) else float(value)
    if hint in (int, str, bool) and type(value) is not hint:
        return hint(value)
    return value


class Jsonable:
    """``to_json()`` and ``from_json(data)`` for a dataclass, by :func:`to_json` and :func:`from_json`."""

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
        return from_json(cls, data)
