"""Typed, nested run configuration: YAML + dotted command-line overrides + algorithm presets.

Precedence, lowest first: the defaults, the chosen ``algorithm.preset`` (its loss knobs and
recommended run settings), the YAML file, then ``key=value`` overrides. Every key, type and range
is checked while the config is built; names that refer to registered pieces (aggregations,
estimators, methods) and the method-specific rules are checked by :func:`cohort.methods.check_config`
before any model loads. The package imports nothing from the rest of cohort: :mod:`.schema` (the
sections, and the registry through which methods add theirs), :mod:`.coercion` (text to typed
values), :mod:`.validation` (range rules), :mod:`.presets`, :mod:`.loading` (building a config).
"""

from cohort.config.coercion import parse_overrides
from cohort.config.loading import build_config, load_config, save_config
from cohort.config.presets import PRESETS, Preset, get_preset
from cohort.config.schema import (
    AlgorithmConfig,
    Config,
    ConfigError,
    DataConfig,
    DistributedConfig,
    IterativeConfig,
    LogConfig,
    ModelConfig,
    OfflineConfig,
    OptimConfig,
    RewardConfig,
    RolloutConfig,
    TrainConfig,
    field_types,
    register_section,
    section_classes,
)

__all__ = [
    "PRESETS", "AlgorithmConfig", "Config", "ConfigError", "DataConfig", "DistributedConfig", "IterativeConfig",
    "LogConfig", "ModelConfig", "OfflineConfig", "OptimConfig", "Preset", "RewardConfig", "RolloutConfig",
    "TrainConfig", "build_config", "field_types", "get_preset", "load_config", "parse_overrides", "register_section",
    "save_config", "section_classes",
]
