"""A quality gate for learned rewards: refuse to train against a reward model that cannot rank.

GRPO compares the samples of one prompt, so a learned reward helps only as far as it orders them
correctly: its held-out **within-group AUC** (``cohort train-rm`` measures it and writes it to the
model's ``training.json``). With ``reward.min_within_group_auc`` set, a run whose reward model
(``reward.process_model``, a ``reward_model`` reward, or iterative RL's starting ``reward_model``)
records less, or records nothing, stops before any weight loads with one line that says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cohort.assets import resolve_builtin

GOLD = "gold"
"""``reward.process_model: {path: gold}``: the task's gold step checker, which has nothing to gate."""

TRAINING_FILE = "training.json"


def learned_reward_models(config: Any) -> list[tuple[str, str]]:
    """(setting, path) of every learned reward model the run trains against."""
    found = []
    process = config.reward.process_model or {}
    if config.algorithm.advantage == "process" and isinstance(process.get("path"), str) and process["path"] != GOLD:
        found.append(("reward.process_model", process["path"]))
    for index, spec in enumerate(config.reward.functions):
        if spec.get("name") == "reward_model" and isinstance(spec.get("path"), str) and float(spec.get("weight", 1.0)) != 0:
            found.append((f"reward.functions[{index}] (reward_model)", spec["path"]))
    if config.iterative.iterations and config.iterative.reward_model:
        found.append(("iterative.reward_model", config.iterative.reward_model))
    return found


def recorded_within_group_auc(path: str) -> float | None:
    """The held-out within-group AUC a reward model's training.json records (None when it has none)."""
    report = Path(resolve_builtin(path)) / TRAINING_FILE
    try:
        held_out = json.loads(report.read_text(encoding="utf-8")).get("held_out") or {}
    except (OSError, ValueError, AttributeError):
        return None
    value = held_out.get("within_group_auc")
    return float(value) if isinstance(value, (int, float)) else None


def check_reward_model_gate(config: Any) -> None:
    """ValueError (one line) when ``reward.min_within_group_auc`` is set and a learned reward model
    falls below it or records no within-group AUC; nothing otherwise."""
    threshold = config.reward.min_within_group_auc
    if threshold is None:
        return
    for setting, path in learned_reward_models(config):
        auc = recorded_within_group_auc(path)
        if auc is None:
            raise ValueError(f"{setting}={path!r} records no held-out within-group AUC ({TRAINING_FILE}), so the quality gate "
                             f"reward.min_within_group_auc={threshold} cannot pass it: train it with cohort train-rm, or set "
                             "reward.min_within_group_auc=null to train anyway")
        if auc < threshold:
            raise ValueError(f"{setting}={path!r} ranks the samples of one prompt with held-out within-group AUC {auc:.3f}, "
                             f"below the quality gate reward.min_within_group_auc={threshold}: GRPO would mostly follow its "
                             "errors (set reward.min_within_group_auc=null, or lower it, to train anyway)")
