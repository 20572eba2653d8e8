"""Online RFT (DeepSeekMath Eq. 10-11): RFT's filter on samples of the current policy at every step;
a correct sample keeps GC = 1 even when its whole group is correct (no baseline, unlike GRPO)."""

from __future__ import annotations

import torch

from cohort.config import Config
from cohort.data.tasks import Task
from cohort.methods.base import TrainingSignal
from cohort.methods.checks import require_correctness
from cohort.methods.coefficient import CoefficientMethod
from cohort.methods.registry import register_method
from cohort.methods.rft import KEPT
from cohort.rewards import NamedReward
from cohort.sources import OnlineRollouts, ScoredBatch, SourcePieces


def first_occurrences(rollout) -> torch.Tensor:
    """[N] bool: True for the first copy of each distinct completion within its prompt's group."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    first = []
    for row, ids in enumerate(rollout.completion_token_lists()):
        key = (row // rollout.group_size, tuple(ids))
        first.append(key not in seen)
        seen.add(key)
    return torch.tensor(first, device=rollout.completion_ids.device)


@register_method
class OnlineRFT(CoefficientMethod):
    name = "online_rft"
    summary = "samples of the current policy each step; fine-tune on the correct ones, deduplicated (GC = I(o))"
    samples = "online"
    panels = (KEPT, *CoefficientMethod.panels)

    @classmethod
    def check_data(cls, config: Config, task: Task, rewards: list[NamedReward]) -> None:
        require_correctness(cls.name, rewards)

    def source(self, pieces: SourcePieces) -> OnlineRollouts:
        return OnlineRollouts(pieces)

    def coefficients(self, batch: ScoredBatch) -> torch.Tensor:
        correct = batch.correct.to(self.context.device) & first_occurrences(batch.rollout)  # [N]
        return correct.float()

    def metrics(self, batch: ScoredBatch, signal: TrainingSignal, stats: dict[str, float]) -> dict[str, float]:
        return {**super().metrics(batch, signal, stats), "rft/kept_frac": float(signal.trainable.float().mean())}
