"""SFT, RFT and online RFT: DeepSeekMath's unified coefficient loss with GC in {0, 1} (spec §7, Eq. 5).

* SFT (Eq. 6-7): dataset (prompt, target) rows, GC = 1.
* RFT (Eq. 8-10): samples of the initial policy drawn once; the correct ones, deduplicated per
  prompt, are fine-tuned on with the SFT loss.
* Online RFT (Eq. 10-11): the same filter on samples of the current policy at every step: a correct
  sample keeps GC = 1 even when its whole group is correct (no baseline, unlike GRPO).

The loss is ``-aggregate(GC * log pi)`` normalised over the kept rows, i.e. the SFT loss on what the
filter kept; rows with GC = 0 skip the forward entirely.
"""

from __future__ import annotations

import torch

from cohort import algo
from cohort.sources.scored_batch import ScoredBatch
from cohort.config import Config, ConfigError
from cohort.data.tasks import Task
from cohort.methods.base import Method, TrainingSignal, take
from cohort.methods.registry import register_method
from cohort.optimisation.update import MicroBatch
from cohort.rewards import NamedReward, correctness_reward
from cohort.sources import (
    DatasetTargets,
    MethodDataError,
    OfflineSamples,
    OnlineRollouts,
    RejectionSampledRows,
    SourcePieces,
    StepTimer,
    check_targets,
)


def check_aggregation(config: Config) -> None:
    if config.algorithm.aggregation not in algo.AGGREGATIONS:
        raise ConfigError(f"algorithm.aggregation={config.algorithm.aggregation!r} is not allowed: expected one of "
                          f"{', '.join(algo.AGGREGATIONS.names())}")


def require_correctness(method: str, rewards: list[NamedReward]) -> None:
    """The rule that decides 'correct' (exact_match, math, code, ...) must be among the rewards."""
    if correctness_reward(rewards) is None:
        names = ", ".join(r.name for r in rewards)
        raise MethodDataError(f"method {method} keeps correct samples, but no reward function measures correctness "
                              f"(rewards: {names}; add exact_match, math or code to reward.functions)")


def first_occurrences(rollout) -> torch.Tensor:
    """[N] bool: True for the first copy of each distinct completion within its prompt's group."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    first = []
    for row, ids in enumerate(rollout.completion_token_lists()):
        key = (row // rollout.group_size, tuple(ids))
        first.append(key not in seen)
        seen.add(key)
    return torch.tensor(first, device=rollout.completion_ids.device)


class CoefficientMethod(Method):
    """GC in {0, 1} per sequence; subclasses say where samples come from and which are kept."""

    algorithm_keys = frozenset({"aggregation"})

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
        metrics = {"rft/kept_frac": float(kept.float().mean())} if self.name == "online_rft" else {}
        return TrainingSignal(loss_mask, kept, {"coefficients": coefficients}, metrics)

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


@register_method
class SFT(CoefficientMethod):
    name = "sft"
    summary = "dataset (prompt, target) rows, token-mean NLL of the target (GC = 1)"
    sections = frozenset({"sft"})
    takes_batch_size = True

    @classmethod
    def check_data(cls, config: Config, task: Task, rewards: list[NamedReward]) -> None:
        check_targets(config, task)

    def source(self, pieces: SourcePieces) -> DatasetTargets:
        return DatasetTargets(pieces)


@register_method
class RFT(CoefficientMethod):
    name = "rft"
    summary = "samples of the initial policy drawn once; fine-tune on the correct ones, deduplicated (GC = I(o))"
    sections = frozenset({"offline"})
    takes_batch_size = True

    @classmethod
    def check_data(cls, config: Config, task: Task, rewards: list[NamedReward]) -> None:
        require_correctness(cls.name, rewards)

    def source(self, pieces: SourcePieces) -> RejectionSampledRows:
        return RejectionSampledRows(pieces, OfflineSamples(pieces))


@register_method
class OnlineRFT(CoefficientMethod):
    name = "online_rft"
    summary = "samples of the current policy each step; fine-tune on the correct ones, deduplicated (GC = I(o))"

    @classmethod
    def check_data(cls, config: Config, task: Task, rewards: list[NamedReward]) -> None:
        require_correctness(cls.name, rewards)

    def source(self, pieces: SourcePieces) -> OnlineRollouts:
        return OnlineRollouts(pieces)

    def coefficients(self, batch: ScoredBatch) -> torch.Tensor:
        correct = batch.correct.to(self.context.device) & first_occurrences(batch.rollout)  # [N]
        return correct.float()


__all__ = ["SFT", "RFT", "OnlineRFT"]
