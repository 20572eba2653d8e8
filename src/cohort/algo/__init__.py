"""Pure math of every method: tensors in, tensors out. Imports torch only (a test enforces it)."""

from cohort.algo.advantages import (
    OUTCOME_ESTIMATORS,
    Advantages,
    OutcomeEstimator,
    degenerate_groups,
    gae_advantages,
    outcome_advantages,
)
from cohort.algo.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    PAIR_LOSSES,
    POLICY_LOSSES,
    ClipRange,
    LossNormalizers,
    aggregate,
    clipped_value_loss,
    coefficient_loss,
    dpo_loss,
    first_token_mask,
    kl_penalty,
    policy_loss,
)
from cohort.algo.importance import engine_mismatch, truncated_is_weights
from cohort.algo.metrics import explained_variance, maj_at_k, majority_answer, pass_at_k
from cohort.algo.ops import (
    entropy_from_logits,
    masked_mean,
    masked_sum,
    masked_whiten,
    token_logprobs,
)
from cohort.algo.process import PROCESS_CREDITS, process_advantages, step_problems

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "OUTCOME_ESTIMATORS",
    "POLICY_LOSSES",
    "PROCESS_CREDITS",
    "Advantages",
    "ClipRange",
    "LossNormalizers",
    "OutcomeEstimator",
    "aggregate",
    "clipped_value_loss",
    "coefficient_loss",
    "degenerate_groups",
    "PAIR_LOSSES",
    "dpo_loss",
    "engine_mismatch",
    "entropy_from_logits",
    "explained_variance",
    "first_token_mask",
    "gae_advantages",
    "kl_penalty",
    "maj_at_k",
    "majority_answer",
    "masked_mean",
    "masked_sum",
    "masked_whiten",
    "outcome_advantages",
    "pass_at_k",
    "policy_loss",
    "process_advantages",
    "step_problems",
    "token_logprobs",
    "truncated_is_weights",
]
