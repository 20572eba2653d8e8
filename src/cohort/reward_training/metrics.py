"""Held-out metrics of a reward model: within-group AUC (the headline), pooled accuracy and AUC, and
the majority-class baseline.

A group-relative method (GRPO) uses nothing of a reward but how it orders the samples of one prompt,
so the number that matters is the **within-group AUC**: over every pair (right, wrong) of samples of
the *same* prompt, the chance that the reward model scores the right one higher (ties count half).
A pooled AUC over all held-out samples mixes prompts, and mostly measures how hard each prompt is.

Units are what gets a score: examples for an outcome RM, steps for a process RM. A unit is
*positive* when its label is at least 0.5, so soft labels are binarised the same way everywhere.
The model predicts positive when ``sigmoid(logit) >= 0.5``, i.e. ``logit >= 0``. For a process RM a
sample's score is its weakest step (the minimum over its steps, as PURE's min form reads it) and
its label is its last step's (the completion's own outcome under Monte-Carlo labels); per step
index, steps k of the samples of one prompt are compared with their own labels.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field

POSITIVE_LABEL = 0.5
"""Labels >= this are the positive class (for accuracy and AUC)."""


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """The Mann-Whitney AUC: the chance that a random positive outscores a random negative, ties
    counted half. Exact: computed from mid-ranks (sums of half-integers, exact in float64), so it
    equals the pair count ``(#{s_p > s_n} + #{s_p = s_n} / 2) / (P * N)``. None when a class is empty.
    """
    wins, pairs = _wins_and_pairs(scores, positive)
    return wins / pairs if pairs else None


def _wins_and_pairs(scores: Sequence[float], positive: Sequence[bool]) -> tuple[float, int]:
    """(U statistic of the positives, P * N) from mid-ranks."""
    if len(scores) != len(positive):
        raise ValueError(f"roc_auc: {len(scores)} scores but {len(positive)} labels")
    num_pos = sum(1 for p in positive if p)
    num_neg = len(positive) - num_pos
    if num_pos == 0 or num_neg == 0:
        return 0.0, 0
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum, start = 0.0, 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        mid_rank = (start + end + 2) / 2  # ranks are 1-based; a tied run shares its average rank
        rank_sum += mid_rank * sum(1 for i in order[start : end + 1] if positive[i])
        start = end + 1
    return rank_sum - num_pos * (num_pos + 1) / 2, num_pos * num_neg


def within_group_auc(scores: Sequence[float], positive: Sequence[bool], groups: Sequence[Hashable]) -> tuple[float | None, int]:
    """AUC over the (positive, negative) pairs that share a group, pooled over groups: every such
    pair counts once, so a group with more mixed pairs weighs more. -> (AUC or None, pairs)

    >>> within_group_auc([0.9, 0.1, 0.5, 0.7], [True, False, True, False], ["a", "a", "b", "b"])
    (0.5, 2)
    """
    if not len(scores) == len(positive) == len(groups):
        raise ValueError(f"within_group_auc: {len(scores)} scores, {len(positive)} labels, {len(groups)} groups")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    wins, pairs = 0.0, 0
    for indices in members.values():
        w, p = _wins_and_pairs([scores[i] for i in indices], [positive[i] for i in indices])
        wins, pairs = wins + w, pairs + p
    return (wins / pairs if pairs else None), pairs


def binary_cross_entropy(logit: float, label: float) -> float:
    """BCE of one logit against a (soft) label, computed stably."""
    return max(logit, 0.0) - logit * label + math.log1p(math.exp(-abs(logit)))


@dataclass(frozen=True)
class HeldOutMetrics:
    """How well the model's logits separate good from bad held-out units, within groups and pooled.

    ``within_group_auc``: samples of one prompt (see the module docstring); ``per_step_within_group_auc``
    (process RMs): the same at step index 1, 2, ... (None where no group has a mixed pair).
    ``majority_accuracy``: the accuracy of always predicting the larger class, the floor to beat.
    """

    units: int
    positives: int
    negatives: int
    accuracy: float
    auc: float | None
    loss: float
    majority_accuracy: float = float("nan")
    within_group_auc: float | None = None
    within_group_pairs: int = 0
    per_step_within_group_auc: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def held_out_metrics(logits: Sequence[float], labels: Sequence[float]) -> HeldOutMetrics:
    """Pooled accuracy (sigmoid(logit) >= 0.5 against label >= 0.5), AUC, mean BCE and the
    majority-class accuracy of scored units (no groups: see :func:`grouped_metrics`)."""
    if len(logits) != len(labels) or not logits:
        raise ValueError(f"held-out metrics need as many logits as labels (> 0), got {len(logits)} and {len(labels)}")
    positive = [label >= POSITIVE_LABEL for label in labels]
    right = sum(1 for logit, pos in zip(logits, positive) if (logit >= 0.0) == pos)
    loss = sum(binary_cross_entropy(logit, label) for logit, label in zip(logits, labels)) / len(labels)
    num_pos = sum(positive)
    return HeldOutMetrics(
        units=len(labels),
        positives=num_pos,
        negatives=len(labels) - num_pos,
        accuracy=right / len(labels),
        auc=roc_auc(logits, positive),
        loss=loss,
        majority_accuracy=max(num_pos, len(labels) - num_pos) / len(labels),
    )


def grouped_metrics(logits: Sequence[Sequence[float]], labels: Sequence[Sequence[float]], groups: Sequence[Hashable],
                    process: bool) -> HeldOutMetrics:
    """Every held-out metric from per-example unit logits and labels and each example's group (its
    prompt). Outcome RM: one unit per example. Process RM: a sample scores its minimum step logit
    against its last step's label, and each step index is compared within groups as well."""
    if not len(logits) == len(labels) == len(groups):
        raise ValueError(f"grouped metrics: {len(logits)} logit lists, {len(labels)} label lists, {len(groups)} groups")
    pooled = held_out_metrics([x for row in logits for x in row], [y for row in labels for y in row])
    kept = [i for i, row in enumerate(logits) if row]
    scores = [min(logits[i]) if process else logits[i][0] for i in kept]
    positive = [labels[i][-1] >= POSITIVE_LABEL for i in kept]
    auc, pairs = within_group_auc(scores, positive, [groups[i] for i in kept])
    per_step = []
    for k in range(max((len(row) for row in logits), default=0) if process else 0):
        rows = [i for i in kept if len(logits[i]) > k]
        per_step.append(within_group_auc([logits[i][k] for i in rows], [labels[i][k] >= POSITIVE_LABEL for i in rows],
                                         [groups[i] for i in rows])[0])
    return HeldOutMetrics(**{**asdict(pooled), "within_group_auc": auc, "within_group_pairs": pairs,
                             "per_step_within_group_auc": per_step})
