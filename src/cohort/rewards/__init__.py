"""Rewards: the protocol, the safe scorer, built-in reward functions and the name registry."""

from cohort.rewards.base import (
    NamedReward,
    RewardFn,
    RewardFunctionError,
    RewardScorer,
    RewardScores,
    RewardTimeout,
    call_with_time_limit,
)
from cohort.rewards.builtin import ExactMatch, FormatReward, SoftOverlongPunishment
from cohort.rewards.registry import (
    BUILTIN_REWARDS,
    build_reward,
    correctness_reward,
    register_reward,
)

__all__ = [
    "BUILTIN_REWARDS",
    "ExactMatch",
    "FormatReward",
    "NamedReward",
    "RewardFn",
    "RewardFunctionError",
    "RewardScorer",
    "RewardScores",
    "RewardTimeout",
    "SoftOverlongPunishment",
    "build_reward",
    "call_with_time_limit",
    "correctness_reward",
    "register_reward",
]
