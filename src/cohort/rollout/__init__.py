"""Generation: prompts -> Rollout (G completions per prompt, masks, sampling log-probs, finish reasons).

``generate_rollout`` (the engine) is imported on first use: it needs transformers' cache classes,
which cost about a second that the config checks and method declarations do not need.
"""

from __future__ import annotations

from cohort.rollout.batch import FINISH_REASONS, Rollout, left_pad
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


def __getattr__(name: str):
    if name == "generate_rollout":
        from cohort.rollout.engine import generate_rollout

        return generate_rollout
    raise AttributeError(f"module 'cohort.rollout' has no attribute {name!r}")
