"""The samples of one training step as a plain value: a Rollout, its prompts and dataset columns, and scores.

Every data source (dataset rows, offline samples of the initial policy, online rollouts) produces a
:class:`ScoredBatch`; methods read it and never ask where it came from. Rows are group-contiguous
(``Rollout.group_size`` rows per prompt): G samples of a GRPO group, a DPO (chosen, rejected) pair,
or one SFT/RFT example (G = 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cohort.rewards import RewardScores
from cohort.rewards.process_model import StepScores
from cohort.rollout import Rollout
from cohort.rollout.batch import concat_rollouts


def no_scores(num_samples: int) -> RewardScores:
    """Scores of samples that were not scored (SFT targets, preference pairs): NaN totals, no functions."""
    return RewardScores(total=torch.full((num_samples,), float("nan"), dtype=torch.float64), per_function={})


@dataclass
class ScoredBatch:
    """One training step's samples: the rollout, what produced it, and how it scored."""

    rollout: Rollout
    prompts: list[Any]  # [P] prompt as given to the rewards
    columns: dict[str, list[Any]]  # dataset columns, [P] each
    completions: list[str]  # [N] decoded completions
    scores: RewardScores  # [N]; NaN totals where nothing scored the sample
    sampled_groups: int = 0  # groups sampled, including those dynamic sampling dropped
    zero_std_groups: int = 0  # of those, groups with no reward spread
    steps: list[StepScores | None] | None = None  # [N] process-reward step scores (process supervision)
    correct: torch.Tensor | None = None  # [N] bool: the correctness reward says correct (None: no such reward)
    extras: dict[str, float] = field(default_factory=dict)  # facts of the source (dataset_size, kept_frac, dataset_pairs); methods name them in their metrics

    @property
    def group_size(self) -> int:
        return self.rollout.group_size

    @property
    def scored(self) -> bool:
        """Whether any sample carries a reward."""
        return bool((~torch.isnan(self.scores.total)).any())

    def select_groups(self, groups: list[int]) -> "ScoredBatch":
        g = self.group_size
        rows = [group * g + i for group in groups for i in range(g)]
        index = torch.tensor(rows, dtype=torch.long)
        return ScoredBatch(
            rollout=self.rollout.select_groups(groups),
            prompts=[self.prompts[group] for group in groups],
            columns={key: [values[group] for group in groups] for key, values in self.columns.items()},
            completions=[self.completions[row] for row in rows],
            scores=RewardScores(
                total=self.scores.total[index],
                per_function={name: values[index] for name, values in self.scores.per_function.items()},
                failures=dict(self.scores.failures),
                first_errors=dict(self.scores.first_errors),
            ),
            sampled_groups=self.sampled_groups,
            zero_std_groups=self.zero_std_groups,
            steps=None if self.steps is None else [self.steps[row] for row in rows],
            correct=None if self.correct is None else self.correct[index],
            extras=dict(self.extras),
        )

    @staticmethod
    def concat(parts: list["ScoredBatch"]) -> "ScoredBatch":
        names = parts[0].scores.per_function
        return ScoredBatch(
            rollout=concat_rollouts([p.rollout for p in parts]),
            prompts=[prompt for p in parts for prompt in p.prompts],
            columns={key: [v for p in parts for v in p.columns[key]] for key in parts[0].columns},
            completions=[c for p in parts for c in p.completions],
            scores=RewardScores(
                total=torch.cat([p.scores.total for p in parts]),
                per_function={name: torch.cat([p.scores.per_function[name] for p in parts]) for name in names},
                failures={name: sum(p.scores.failures.get(name, 0) for p in parts) for name in names},
                first_errors=merged_first_errors([p.scores.first_errors for p in parts]),
            ),
            sampled_groups=sum(p.sampled_groups for p in parts),
            zero_std_groups=sum(p.zero_std_groups for p in parts),
            steps=None if parts[0].steps is None else [s for p in parts for s in p.steps],
            correct=None if parts[0].correct is None else torch.cat([p.correct for p in parts]),
            extras=dict(parts[0].extras),
        )


def merged_first_errors(parts: list[dict[str, str]]) -> dict[str, str]:
    """Each function's first error over several batches, in order."""
    merged: dict[str, str] = {}
    for part in parts:
        for name, error in part.items():
            merged.setdefault(name, error)
    return merged


def per_sample_columns(columns: dict[str, list[Any]], rollout: Rollout) -> dict[str, list[Any]]:
    """Per-prompt dataset columns repeated for each of the G samples, plus ``completion_ids``."""
    g = rollout.group_size
    expanded = {key: [value for value in values for _ in range(g)] for key, values in columns.items()}
    expanded["completion_ids"] = rollout.completion_token_lists()
    return expanded
