"""Everything about a run that can be checked without loading weights, in one place: the settings
(method rules, trackers, LoRA options), the model directory (present, a causal LM, of a shape the
rollout engine runs), the data (rows, columns, the prompt template), and the rewards (built, so a
user module that does not import fails now). ``cohort train`` runs it before it loads anything;
``cohort config`` runs it and stops there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cohort.assets import resolve_builtin
from cohort.config import Config
from cohort.data.tasks import Task, format_prompt, task_from_settings
from cohort.distributed import Sharding
from cohort.methods import check_config
from cohort.models.loading import check_causal_lm, resolve_device, resolve_model_source
from cohort.models.lora import LoraError, lora_config
from cohort.monitoring.metrics_writer import MetricsWriter
from cohort.rewards import NamedReward
from cohort.rewards.configured import run_rewards
from cohort.rollout.engines import check_engine


@dataclass
class Preflight:
    """What the checks built on the way: the method class, the model's location, the task, the rewards."""

    method_class: type
    model_path: str
    task: Task
    rewards: list[NamedReward]


def check_settings(config: Config, *, distributed: bool = False) -> type:
    """The settings alone (nothing is read): method rules, trackers, LoRA options; returns the method class."""
    method_class = check_config(config)
    MetricsWriter.check_trackers(config)  # an unknown or uninstalled log.trackers entry
    if config.model.lora is not None:
        lora_config(config.model.lora)  # a wrong option (or no PEFT)
        if distributed and config.distributed.strategy == "fsdp2":
            raise LoraError("model.lora with distributed.strategy=fsdp2 is not supported; use ddp (the adapters are small)")
    return method_class


def preflight(config: Config, *, resume_from: Path | None = None, distributed: bool = False) -> Preflight:
    """Every check that needs no weights; the first problem raises a ValueError of one line."""
    method_class = check_settings(config, distributed=distributed)
    task = task_from_settings(config.data, config.train.seed)
    format_prompt(task.train[0], config.data.prompt_template, task.prompt_column)
    rewards = run_rewards(config, task)
    method_class.check_data(config, task, rewards)
    model_path = resolve_builtin(config.model.path)
    if resume_from is None:  # a resumed run loads its own checkpoint
        resolve_model_source(model_path, what="model")  # a missing directory fails in seconds
        check_causal_lm(model_path, "model.path")
    device = resolve_device(config.model.device)
    Sharding(config.distributed.mixed_precision, config.distributed.cpu_offload).check(device.type)  # every rank alike
    check_engine(config.rollout, model_path, device, config.model.trust_remote_code)
    return Preflight(method_class, model_path, task, rewards)
