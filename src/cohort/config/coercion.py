"""From text to typed values: YAML trees and ``key=value`` overrides flattened to dotted keys, and each
value checked against its field's annotation (``"1e-5"`` -> float, ``3.0`` -> int 3, a Literal's
choices, ``X | None``, lists, tuples). A wrong key names the closest one and its section's keys.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal, Union

import yaml

from cohort.config.schema import ConfigError, field_types, section_classes


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as 'line L, column C: problem' (1-based), in one line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def unknown_key(key: str) -> ConfigError:
    """The error for a key no section has: the closest key, and the keys of its section."""
    types_by_key = field_types()
    sections = section_classes()
    close = difflib.get_close_matches(key, list(types_by_key), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    section = key.split(".")[0]
    if section in sections:
        allowed = sorted(k.split(".", 1)[1] for k in types_by_key if k.startswith(section + "."))
        return ConfigError(f"unknown config key {key!r}{hint} (keys of section {section!r}: {', '.join(allowed)})")
    return ConfigError(f"unknown config key {key!r}{hint} (sections: {', '.join(sections)})")


def flatten(tree: Any, source: str) -> dict[str, Any]:
    """{'rollout': {'group_size': 4}} -> {'rollout.group_size': 4}, rejecting unknown keys."""
    sections, types_by_key = section_classes(), field_types()
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections, got {type(tree).__name__}")
    flat = {}
    for section, values in tree.items():
        if section not in sections:
            raise unknown_key(str(section))
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys, got {values!r}")
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted not in types_by_key:
                raise unknown_key(dotted)
            flat[dotted] = value
    return flat


def _holds_options(annotation: Any) -> bool:
    """Whether a field holds YAML-typed options (a mapping or a list, possibly optional)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return any(_holds_options(arg) for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) in (dict, list) or annotation in (dict, list)


def nested_key(key: str, types_by_key: dict[str, Any]) -> tuple[str, list[str]] | None:
    """``model.lora.r`` -> (``model.lora``, [``r``]) when ``model.lora`` holds options (a mapping, or a
    list such as ``reward.functions``, whose entries are addressed by index: ``reward.functions.0.weight``)."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 1, -1):
        parent = ".".join(parts[:cut])
        if parent in types_by_key:
            return (parent, parts[cut:]) if _holds_options(types_by_key[parent]) else None
    return None


def set_nested(value: Any, path: list[str], item: Any, key: str) -> Any:
    """A copy of the option tree ``value`` with ``item`` at ``path`` (mappings are created as needed;
    a list entry must exist)."""
    if not path:
        return item
    step, rest = path[0], path[1:]
    if value is None:
        value = {}
    if isinstance(value, dict):
        return {**value, step: set_nested(value.get(step), rest, item, key)}
    if isinstance(value, list):
        if not step.isdigit() or int(step) >= len(value):
            raise ConfigError(f"override {key!r}: {step!r} is not an entry of the list (it has {len(value)}: 0..{len(value) - 1})")
        index = int(step)
        return [*value[:index], set_nested(value[index], rest, item, key), *value[index + 1 :]]
    raise ConfigError(f"override {key!r}: {step!r} is inside {value!r}, which holds no options")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["rollout.group_size=16", "train.resume=true"]`` -> dotted dict with YAML-typed values. A key
    may reach inside an option mapping or list: ``model.lora.r=16``, ``reward.functions.0.weight=2``."""
    flat = {}
    types_by_key = field_types()
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        if key not in types_by_key and nested_key(key, types_by_key) is None:
            raise unknown_key(key)
        try:
            flat[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({yaml_problem(err)})") from None
    return flat


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin in (list, tuple, dict):
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def _coerce_union(key: str, value: Any, annotation: Any, error: ConfigError) -> Any:
    args = typing.get_args(annotation)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(key, value, arg)
        except ConfigError:
            continue
    raise error


def _coerce_scalar(value: Any, annotation: Any, error: ConfigError) -> Any:
    """bool, int, float and str, with the obvious conversions (``"1e-5"`` -> float, 3.0 -> 3)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int and is_number and float(value).is_integer():
        return int(value)
    if annotation is float:
        if is_number:
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise error from None
    if annotation is str and (isinstance(value, str) or is_number):
        return str(value)
    raise error


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against ``annotation`` and return it in that type; ConfigError otherwise."""
    error = ConfigError(f"{key}={value!r} is not allowed: expected {_describe(annotation)}")
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return _coerce_union(key, value, annotation, error)
    if origin is Literal:
        if value in typing.get_args(annotation):
            return value
        raise error
    if annotation in (bool, int, float, str):
        return _coerce_scalar(value, annotation, error)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str) and item_type is str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise error
        return [coerce(f"{key}[{i}]", item, item_type) for i, item in enumerate(value)]
    if origin is tuple:
        item_types = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise error
        return tuple(coerce(f"{key}[{i}]", item, t) for i, (item, t) in enumerate(zip(value, item_types)))
    if origin is dict:
        if not isinstance(value, dict):
            raise error
        return dict(value)
    if annotation is Any:
        return value
    raise error
