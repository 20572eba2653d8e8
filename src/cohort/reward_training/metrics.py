"""Held-out metrics of a reward model: accuracy at a threshold and the exact ROC AUC.

A unit (an outcome example, or one step of a process example) is *positive* when its label is at
least 0.5, so soft labels are binarised the same way everywhere. The model predicts positive when
``sigmoid(logit) >= 0.5``, i.e. ``logit >= 0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

POSITIVE_LABEL = 0.5
"""Labels >= this are the positive class (for accuracy and AUC)."""


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """The Mann-Whitney AUC: the chance that a random positive outscores a random negative, ties
    counted half. Exact: computed from mid-ranks (sums of half-integers, exact in float64), so it
    equals the pair count ``(#{s_p > s_n} + #{s_p = s_n} / 2) / (P * N)``. None when a class is empty.
    """
    if len(scores) != len(positive):
        raise ValueError(f"roc_auc: {len(scores)} scores but {len(positive)} labels")
    num_pos = sum(1 for p in positive if p)
    num_neg = len(positive) - num_pos
    if num_pos == 0 or num_neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum, start = 0.0, 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        mid_rank = (start + end + 2) / 2  # ranks are 1-based; a tied run shares its average rank
        rank_sum += mid_rank * sum(1 for i in order[start : end + 1] if positive[i])
        start = end + 1
    wins = rank_sum - num_pos * (num_pos + 1) / 2  # U statistic of the positives
    return wins / (num_pos * num_neg)


def binary_cross_entropy(logit: float, label: float) -> float:
    """BCE of one logit against a (soft) label, computed stably."""
    return max(logit, 0.0) - logit * label + math.log1p(math.exp(-abs(logit)))


@dataclass(frozen=True)
class HeldOutMetrics:
    """How well the model's logits separate good from bad units of the held-out set."""

    units: int
    positives: int
    negatives: int
    accuracy: float
    auc: float | None
    loss: float

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def held_out_metrics(logits: Sequence[float], labels: Sequence[float]) -> HeldOutMetrics:
    """Accuracy (sigmoid(logit) >= 0.5 against label >= 0.5), AUC and mean BCE of scored units."""
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
    )
