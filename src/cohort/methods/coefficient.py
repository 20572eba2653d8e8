"""DeepSeekMath's unified coefficient loss with GC in {0, 1} (docs/spec.md §7, Eq. 5), shared by SFT, RFT and
online RFT: ``-aggregate(GC * log pi)`` normalised over the kept rows, i.e. the SFT loss on what the
method kept; rows with GC = 0 skip the forward entirely."""

from __future__ import annotations

import torch

from cohort import algo
from cohort.config import Config
from cohort.methods.base import Method, TrainingSignal, take
from cohort.methods.checks import check_aggregation
from cohort.monitoring.panels import NLL
from cohort.optimisation.update import MicroBatch
from cohort.sources import ScoredBatch, StepTimer


class CoefficientMethod(Method):
    """GC in {0, 1} per sequence; subclasses say where samples come from and which are kept."""

    reads = frozenset({"algorithm.aggregation"})
    panels = (NLL,)

    @classmethod
    def check(cls, config: Config) -> None:
        check_aggregation(config)

    def coefficients(self, batch: ScoredBatch) -> torch.Tensor:
        """[N] float: GC of each sequence."""
        return torch.ones(batch.rollout.num_completions, device=self.context.device)

    def signal(self, batch: ScoredBatch, timer: StepTimer) -> TrainingSignal:
        coefficients = self.coefficients(batch).to(self.context.device, torch.float32)  # [N]
        loss_mask = batch.rollout.completion_mask & (coefficients != 0).unsqueeze(1)  # [N, T]
        kept = loss_mask.any(dim=1)  # [N]
        return TrainingSignal(loss_mask, kept, {"coefficients": coefficients}, per_sample=coefficients)

    def normalizers(self, signal: TrainingSignal, rows: list[int]) -> algo.LossNormalizers:
        kept = [r for r in rows if signal.trainable[r]]
        return algo.LossNormalizers.from_mask(signal.loss_mask[kept])

    def loss(self, micro: MicroBatch, signal: TrainingSignal, norm: algo.LossNormalizers):
        return algo.coefficient_loss(
            micro.logprobs, take(signal.tensors["coefficients"], micro), micro.mask,
            aggregation=self.config.algorithm.aggregation, normalizers=norm, max_length=self.config.rollout.max_new_tokens,
        )

    def metrics(self, batch: ScoredBatch, signal: TrainingSignal, stats: dict[str, float]) -> dict[str, float]:
        return {"nll": stats.get("nll", float("nan"))}
