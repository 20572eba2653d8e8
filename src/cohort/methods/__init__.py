"""The training methods of the unified paradigm, one registered value each (``algorithm.method``).

| method     | data source                                | reward                 | gradient coefficient                      |
|------------|--------------------------------------------|------------------------|-------------------------------------------|
| sft        | dataset (prompt, target) rows              | none                   | 1                                         |
| rft        | initial policy's samples, drawn once       | rule (correctness)     | I(o correct), deduplicated                |
| online_rft | current policy's samples, each step        | rule (correctness)     | I(o correct), deduplicated                |
| dpo        | (correct, incorrect) pairs of the initial  | rule (to pick pairs)   | sigmoid-weighted +/- (the DPO gradient)   |
|            | policy, or a preference file               |                        |                                           |
| ppo        | current policy's samples                   | rule or model, KL in r | GAE advantage from a value model, clipped |
| grpo       | current policy's samples, G per prompt     | rule or model; O or P  | group-relative advantage, clipped, + KL   |

:func:`check_config` applies each method's rules to a config before anything is loaded.
"""

from __future__ import annotations

from cohort.config import Config, ConfigError
from cohort.methods.base import Method, MethodContext, TrainingSignal
from cohort.methods.coefficient import SFT, OnlineRFT, RFT
from cohort.methods.dpo import DPO
from cohort.methods.grpo import GRPO
from cohort.methods.ppo import PPO
from cohort.methods.registry import METHODS, register_method

METHOD_SECTIONS = ("sft", "offline", "dpo", "ppo", "iterative")
"""Config sections that belong to particular methods."""


def method_class(config: Config) -> type[Method]:
    """The Method class that ``algorithm.method`` names."""
    name = config.algorithm.method
    if name not in METHODS:
        raise ConfigError(f"algorithm.method={name!r} is not allowed: expected one of {', '.join(METHODS.names())}")
    return METHODS.get(name)


def _owners(key: str) -> list[str]:
    """The methods that read ``key``."""
    section, name = key.split(".", 1)
    owners = []
    for method in METHODS.names():
        cls = METHODS.get(method)
        reads = (
            (section == "algorithm" and name in cls.algorithm_keys)
            or section in cls.sections
            or (key == "train.batch_size" and cls.takes_batch_size)
            or (key == "reward.process_model" and method == "grpo")
        )
        if reads:
            owners.append(method)
    return owners


def _belongs_elsewhere(key: str, cls: type[Method]) -> bool:
    section, name = key.split(".", 1)
    if section == "algorithm":
        return name != "method" and name not in cls.algorithm_keys
    if section in METHOD_SECTIONS:
        return section not in cls.sections
    if key == "train.batch_size":
        return not cls.takes_batch_size
    return key == "reward.process_model" and cls.name != "grpo"


def check_config(config: Config) -> type[Method]:
    """Reject settings of another method and apply the method's own rules; returns its class."""
    cls = method_class(config)
    for key in sorted(config.user_keys):
        if _belongs_elsewhere(key, cls):
            owners = _owners(key)
            raise ConfigError(
                f"{key} belongs to method {' / '.join(owners) or '(none)'}, not {cls.name}; method {cls.name} reads "
                f"algorithm.{{{', '.join(sorted(cls.algorithm_keys)) or 'method'}}}"
                + (f" and the sections {', '.join(sorted(cls.sections))}" if cls.sections else "")
            )
    if config.algorithm.ref_reset_every and not cls.resets_reference:
        raise ConfigError(f"algorithm.ref_reset_every applies to grpo and ppo, not {cls.name}")
    cls.check(config)
    return cls


__all__ = ["DPO", "GRPO", "METHODS", "PPO", "RFT", "SFT", "Method", "MethodContext", "OnlineRFT", "TrainingSignal",
           "check_config", "method_class", "register_method"]
