"""What a resume may change, and the record of every segment's config.

A resumed run continues the same experiment: its steps must mean what the earlier steps meant. So
a resume refuses a config that differs in anything but the run's length, its evaluation and
logging, and where it runs (``RESUME_MAY_CHANGE``); the error lists every change and names the key
that accepts them (``train.accept_changes=true``: the new values then apply from the resumed step,
optimizer hyperparameters included). Each segment's config is kept: ``configs/step-N.yaml`` is the
config the run used from step N on, and ``config.yaml`` is the latest one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cohort.config import Config, ConfigError, save_config
from cohort.run_directory import RunDirectory

RESUME_MAY_CHANGE = (
    "train.steps", "train.resume", "train.overwrite", "train.accept_changes", "train.save_every", "train.keep_checkpoints",
    "train.eval_before", "train.eval_after", "train.eval_every", "train.eval_samples", "train.threads", "train.out_dir",
    "data.eval_limit", "model.device", "iterative.iterations", "reward.backend", "reward.ray_address",
    "reward.ray_workers", "reward.ray_chunk_size", "log.*", "distributed.*",
)
"""Keys (or ``section.*``) a resume may change freely: run length, evaluation, logging, placement."""
CONFIGS_DIR = "configs"


def _may_change(key: str) -> bool:
    return key in RESUME_MAY_CHANGE or f"{key.split('.', 1)[0]}.*" in RESUME_MAY_CHANGE


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in tree.items() if isinstance(values, dict)
            for key, value in values.items()}


def config_changes(saved: dict[str, Any], config: Config) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) for every setting a resume may not change silently."""
    old, new = _flat(saved), _flat(config.to_dict())
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if not _may_change(key) and old.get(key) != new.get(key)]


def check_resume(run: RunDirectory, config: Config, step: int) -> list[tuple[str, Any, Any]]:
    """The changes against the run's latest config; ConfigError listing them unless train.accept_changes."""
    if not run.config.is_file():
        return []
    changes = config_changes(yaml.safe_load(run.config.read_text()) or {}, config)
    if changes and not config.train.accept_changes:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
        raise ConfigError(f"train.resume=true with a changed config ({listed}): the resumed steps would not continue "
                          f"the same run; restore those settings, or pass train.accept_changes=true to apply them from "
                          f"step {step} on (recorded in {CONFIGS_DIR}/step-{step}.yaml)")
    return changes


def record_segment(run: RunDirectory, config: Config, step: int) -> Path:
    """Write the config of the segment starting at ``step`` (and make it the run's config.yaml)."""
    directory = run.root / CONFIGS_DIR
    directory.mkdir(exist_ok=True)
    path = directory / f"step-{step}.yaml"
    save_config(config, path)
    save_config(config, run.config)
    return path
