"""Build a config: defaults, then the chosen ``algorithm.preset``, then the YAML file, then ``key=value``
overrides (lowest first); every value coerced, every rule checked, before anything is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cohort.config.coercion import (
    coerce,
    flatten,
    nested_key,
    parse_overrides,
    set_nested,
    unknown_key,
    yaml_problem,
)
from cohort.config.presets import get_preset
from cohort.config.schema import (
    AlgorithmConfig,
    Config,
    ConfigError,
    default_value,
    field_types,
    section_classes,
)
from cohort.config.validation import validate


def _resolve(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Later layers win; every value coerced to its field's type."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    types_by_key = field_types()
    return {key: coerce(key, value, types_by_key[key]) for key, value in merged.items()}


def build_config(flat: dict[str, Any], *, base: dict[str, Any] | None = None) -> Config:
    """A validated Config from the user's dotted values (``flat``) over ``base``, the preset and the defaults.

    ``Config.user_keys`` records which of ``flat``'s keys differ from what the lower layers give.
    """
    base = base or {}
    types_by_key = field_types()
    for key in [*base, *flat]:
        if key not in types_by_key and (key in base or nested_key(key, types_by_key) is None):
            raise unknown_key(key)
    inside = {key: value for key, value in flat.items() if key not in types_by_key}  # model.lora.r=16
    flat = {key: value for key, value in flat.items() if key in types_by_key}
    preset = get_preset(flat.get("algorithm.preset", base.get("algorithm.preset", AlgorithmConfig.preset)))
    lower = _resolve([dict(preset.settings), base])
    resolved = _resolve([lower, flat])
    for key, value in inside.items():
        parent, path = nested_key(key, types_by_key)
        current = resolved.get(parent, lower.get(parent, default_value(parent)))
        resolved[parent] = coerce(parent, set_nested(current, path, value, key), types_by_key[parent])
        flat[parent] = resolved[parent]
    classes = section_classes()
    sections: dict[str, dict[str, Any]] = {name: {} for name in classes}
    for key, value in resolved.items():
        section, name = key.split(".", 1)
        sections[section][name] = value
    config = Config(**{name: cls(**sections[name]) for name, cls in classes.items()})
    validate(config, steps_set="train.steps" in flat)
    config.user_keys = frozenset(key for key in flat if resolved[key] != lower.get(key, default_value(key)))
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Config from an optional YAML file and ``key=value`` overrides (``base`` is a lower YAML layer)."""
    flat: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            tree = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(err)}") from None
        flat.update(flatten(tree, str(path)))
    flat.update(parse_overrides(overrides or []))
    return build_config(flat, base=flatten(base, "base config") if base else None)


def save_config(config: Config, path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
