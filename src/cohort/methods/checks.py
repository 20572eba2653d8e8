"""Config and data rules that several methods share (each method's own rules live in its file)."""

from __future__ import annotations

from cohort import algo
from cohort.config import Config, ConfigError
from cohort.rewards import NamedReward, correctness_reward
from cohort.sources import MethodDataError


def check_aggregation(config: Config) -> None:
    """algorithm.aggregation names a registered token aggregation."""
    if config.algorithm.aggregation not in algo.AGGREGATIONS:
        raise ConfigError(f"algorithm.aggregation={config.algorithm.aggregation!r} is not allowed: expected one of "
                          f"{', '.join(algo.AGGREGATIONS.names())}")


def check_clip_settings(config: Config) -> None:
    """algorithm.policy_loss names a registered surrogate, and dual_clip is set exactly for dual_clip."""
    a = config.algorithm
    if a.policy_loss not in algo.POLICY_LOSSES:
        raise ConfigError(f"algorithm.policy_loss={a.policy_loss!r} is not allowed: expected one of {', '.join(algo.POLICY_LOSSES.names())}")
    if (a.policy_loss == "dual_clip") != (a.dual_clip is not None):
        raise ConfigError(f"algorithm.dual_clip={a.dual_clip!r} is not allowed: expected a bound > 1 exactly when "
                          f"algorithm.policy_loss=dual_clip (policy_loss is {a.policy_loss!r})")


def require_correctness(method: str, rewards: list[NamedReward]) -> None:
    """The rule that decides 'correct' (exact_match, math, code, ...) must be among the rewards."""
    if correctness_reward(rewards) is None:
        names = ", ".join(r.name for r in rewards)
        raise MethodDataError(f"method {method} keeps correct samples, but no reward function measures correctness "
                              f"(rewards: {names}; add exact_match, math or code to reward.functions, or mark your own rule "
                              "with correctness: true)")
