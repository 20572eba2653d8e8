"""The metrics every method shares, computed over the global batch (all data-parallel ranks).

Per-row facts (rewards, correctness, lengths) are gathered from every rank and reduced once, so a
metric reads the same in one process and under torchrun. Method-specific metrics come from each
rank and are averaged (every rank holds the same number of examples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from cohort.distributed import World
from cohort.sources.scored_batch import ScoredBatch, merged_first_errors


@dataclass
class BatchFacts:
    """What the shared metrics need of a batch, as small CPU tensors."""

    total: torch.Tensor  # [N] float64, NaN = not scored
    per_function: dict[str, torch.Tensor]  # name -> [N] float64
    failures: dict[str, int]
    correct: torch.Tensor | None  # [N] bool
    lengths: torch.Tensor  # [N] long
    truncated: torch.Tensor  # [N] bool
    trainable: torch.Tensor  # [N] bool
    first_errors: dict[str, str] = field(default_factory=dict)  # name -> its first error in the batch

    @classmethod
    def of(cls, batch: ScoredBatch, trainable: torch.Tensor) -> "BatchFacts":
        return cls(
            batch.scores.total.cpu(), {k: v.cpu() for k, v in batch.scores.per_function.items()}, dict(batch.scores.failures),
            None if batch.correct is None else batch.correct.cpu(), batch.rollout.completion_lengths.cpu(),
            batch.rollout.truncated.cpu(), trainable.cpu(), dict(batch.scores.first_errors),
        )

    @classmethod
    def gather(cls, world: World, facts: "BatchFacts") -> "BatchFacts":
        """Every rank's facts concatenated in rank order (the global batch)."""
        parts = world.gather(facts)
        if len(parts) == 1:
            return facts
        first = parts[0]
        return cls(
            torch.cat([p.total for p in parts]),
            {name: torch.cat([p.per_function[name] for p in parts]) for name in first.per_function},
            {name: sum(p.failures.get(name, 0) for p in parts) for name in first.failures},
            None if first.correct is None else torch.cat([p.correct for p in parts]),
            torch.cat([p.lengths for p in parts]),
            torch.cat([p.truncated for p in parts]),
            torch.cat([p.trainable for p in parts]),
            merged_first_errors([p.first_errors for p in parts]),
        )


def reward_metrics(facts: BatchFacts) -> dict[str, Any]:
    """reward/mean, reward/std, reward/<name>/mean, accuracy, reward/none_frac, reward/failures.

    reward/none_frac and reward/failures are always there, above all when no sample could be scored
    (mean and std are then left out, and each reward/<name>/mean is NaN): that is when they matter.
    """
    total = facts.total
    valid = ~torch.isnan(total)
    metrics: dict[str, Any] = {}
    if valid.any():
        metrics["reward/mean"] = float(total[valid].mean())
        metrics["reward/std"] = float(total[valid].std()) if int(valid.sum()) > 1 else 0.0
    for name, values in facts.per_function.items():
        ok = ~torch.isnan(values)
        metrics[f"reward/{name}/mean"] = float(values[ok].mean()) if ok.any() else float("nan")
    if facts.correct is not None and valid.any():
        metrics["accuracy"] = float(facts.correct.float().mean())
    metrics["reward/none_frac"] = float((~valid).float().mean()) if total.numel() else 0.0
    metrics["reward/failures"] = sum(facts.failures.values())
    return metrics


def shape_metrics(facts: BatchFacts) -> dict[str, Any]:
    """completion_len/mean, /max, /correct_mean, /wrong_mean, truncated_frac, trained_frac."""
    lengths = facts.lengths.float()
    metrics: dict[str, Any] = {
        "completion_len/mean": float(lengths.mean()),
        "completion_len/max": int(lengths.max()),
        "truncated_frac": float(facts.truncated.float().mean()),
        "trained_frac": float(facts.trainable.float().mean()),
    }
    if facts.correct is not None:  # the length bias (Dr. GRPO §3.1): do wrong answers grow longer?
        for name, rows in (("correct", facts.correct), ("wrong", ~facts.correct)):
            metrics[f"completion_len/{name}_mean"] = float(lengths[rows].mean()) if rows.any() else float("nan")
    return metrics


def mean_over_ranks(world: World, metrics: dict[str, Any]) -> dict[str, Any]:
    """Each numeric metric averaged over the ranks (NaN where a rank had none); others from rank 0."""
    parts = world.gather(metrics)
    if len(parts) == 1:
        return metrics
    merged: dict[str, Any] = {}
    for key, value in parts[0].items():
        values = [p.get(key) for p in parts]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        merged[key] = sum(numbers) / len(numbers) if numbers and len(numbers) == len(values) else value
    return merged


def step_metrics(world: World, step: int, facts: BatchFacts, method_metrics: dict[str, Any],
                 stats: dict[str, float], times: dict[str, float], lr: float) -> dict[str, Any]:
    """One step's record for metrics.jsonl: the shared metrics of the global batch, the method's own
    (averaged over ranks), the update's, and the time of each phase (``times``: rollout, reward,
    logprob, train, step seconds). ``facts`` are the global batch's (:meth:`BatchFacts.gather`)."""
    metrics: dict[str, Any] = {"step": step, **reward_metrics(facts)}
    metrics.update(mean_over_ranks(world, method_metrics))
    metrics.update({
        "entropy": stats["entropy"],
        **shape_metrics(facts),
        "loss": stats.get("loss", 0.0),
        "grad_norm": stats.get("grad_norm", 0.0),
        **{key: value for key, value in stats.items() if key.endswith("/grad_norm")},
        "lr": lr,
        **{f"time/{phase}_s": seconds for phase, seconds in times.items()},
        "tokens_per_s": float(facts.lengths.sum()) / times["step"],
    })
    return metrics


def completion_records(step: int, batch: ScoredBatch, per_sample: torch.Tensor | None, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` samples of a step for completions.jsonl, with each one's advantage or coefficient."""
    g = batch.group_size
    lengths = batch.rollout.completion_lengths.tolist()
    return [
        {
            "step": step,
            "group": row // g,
            "prompt": batch.prompts[row // g],
            "completion": batch.completions[row],
            "reward": float(batch.scores.total[row]),
            "rewards": {name: float(v[row]) for name, v in batch.scores.per_function.items()},
            "advantage": None if per_sample is None else float(per_sample[row]),
            "length": lengths[row],
            "finish_reason": batch.rollout.finish_reasons[row],
        }
        for row in range(min(limit, len(batch.completions)))
    ]
