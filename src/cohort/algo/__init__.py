"""Pure GRPO math: tensors in, tensors out. Imports torch only (a test enforces it)."""

from cohort.algo.advantages import (
    OUTCOME_ESTIMATORS,
    Advantages,
    degenerate_groups,
    gae_advantages,
    outcome_advantages,
    process_advantages,
)
from cohort.algo.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    LossNormalizers,
    aggregate,
    clipped_value_loss,
    dpo_loss,
    first_token_mask,
    kl_penalty,
    policy_loss,
)
from cohort.algo.metrics import maj_at_k, majority_answer, pass_at_k
from cohort.algo.ops import entropy_from_logits, masked_mean, masked_sum, token_logprobs
from cohort.algo.presets import PRESETS, LossKnobs, Preset, get_preset

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "OUTCOME_ESTIMATORS",
    "PRESETS",
    "Advantages",
    "LossKnobs",
    "LossNormalizers",
    "Preset",
    "aggregate",
    "clipped_value_loss",
    "degenerate_groups",
    "dpo_loss",
    "entropy_from_logits",
    "first_token_mask",
    "gae_advantages",
    "get_preset",
    "kl_penalty",
    "maj_at_k",
    "majority_answer",
    "masked_mean",
    "masked_sum",
    "outcome_advantages",
    "pass_at_k",
    "policy_loss",
    "process_advantages",
    "token_logprobs",
]
