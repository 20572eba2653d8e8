"""Generation: prompts -> Rollout (G completions per prompt, masks, sampling log-probs, finish reasons)."""

from cohort.rollout.batch import FINISH_REASONS, Rollout, left_pad
from cohort.rollout.engine import generate_rollout
from cohort.rollout.sampling import (
    SamplingParams,
    choose_tokens,
    filter_logits,
    sample_from_probs,
)

__all__ = [
    "FINISH_REASONS",
    "Rollout",
    "SamplingParams",
    "choose_tokens",
    "filter_logits",
    "generate_rollout",
    "left_pad",
    "sample_from_probs",
]
