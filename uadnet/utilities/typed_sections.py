"""Typed sections from JSON: a dataclass (with nested dataclasses, lists, dicts, optionals) from a parsed JSON
object, naming the offending key (dotted path) on unknown keys, missing required keys and wrong types. The plans
(:mod:`uadnet.plans`) and methods' own plans sections from other packages are read with it."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


class PlansError(ValueError):
    """``uadnet_plans.json`` does not match the schema."""


def section_from_dict(cls: Any, d: dict[str, Any], where: str) -> Any:
    """A typed plans section (a dataclass such as those of :mod:`uadnet.plans`) from JSON data; ``PlansError``
    naming ``where`` (a dotted path) for unknown keys, missing required keys and wrong types."""
    return _from_dict(cls, d, where)


def _from_dict(cls: Any, d: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise PlansError(f"unknown key(s) {unknown} in '{where}' (typo?); known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            kwargs[f.name] = _convert(hints[f.name], d[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise PlansError(f"missing key '{where}.{f.name}'")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PlansError(f"'{where}' must be an object")
        return _from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise PlansError(f"'{where}' must not be null")
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if origin is list:
        if not isinstance(value, list):
            raise PlansError(f"'{where}' must be a list")
        (arg,) = typing.get_args(tp)
        return [_convert(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise PlansError(f"'{where}' must be an object")
        _, arg = typing.get_args(tp)
        return {k: _convert(arg, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PlansError(f"'{where}' must be a number, got {value!r}")
        return float(value)
    if tp in (int, bool, str) and not (type(value) is tp):
        raise PlansError(f"'{where}' must be of type {tp.__name__}, got {value!r}")
    return value
