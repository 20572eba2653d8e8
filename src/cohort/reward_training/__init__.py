"""Reward-model training: outcome RMs and process RMs from labelled completions (``cohort train-rm``).

``train_outcome_model`` / ``train_process_model`` fit a single-logit head (new on a causal LM, or
continued from an earlier reward model) with binary cross-entropy and write an HF model that
cohort's ``reward_model`` reward and ``reward.process_model`` load as they are; both return a
:class:`RewardTrainingReport`: the loss curve and the held-out metrics, headed by the within-group AUC
(how well the model orders the samples of one prompt, what GRPO uses), beside pooled accuracy, exact
AUC and the majority-class baseline; with ``patience``, early stopping on that within-group AUC. The examples come
from JSONL files (``read_outcome_examples`` / ``read_process_examples``) or from memory, e.g.
from ``cohort.reward_training.labels`` (Monte-Carlo step labels in the manner of Math-Shepherd).
"""

from cohort.reward_training.examples import (
    DataError,
    OutcomeExample,
    ProcessExample,
    read_outcome_examples,
    read_process_examples,
    with_replay,
    write_examples,
)
from cohort.reward_training.metrics import HeldOutMetrics, grouped_metrics, held_out_metrics, roc_auc, within_group_auc
from cohort.reward_training.train import (
    REPORT_FILE,
    RewardTrainingOptions,
    RewardTrainingReport,
    train_outcome_model,
    train_process_model,
)

__all__ = [
    "REPORT_FILE",
    "DataError",
    "HeldOutMetrics",
    "OutcomeExample",
    "ProcessExample",
    "RewardTrainingOptions",
    "RewardTrainingReport",
    "grouped_metrics",
    "held_out_metrics",
    "read_outcome_examples",
    "read_process_examples",
    "roc_auc",
    "train_outcome_model",
    "train_process_model",
    "with_replay",
    "within_group_auc",
    "write_examples",
]
