"""DPO (DeepSeekMath A.1.4, docs/spec.md §1.2): pairs (chosen, rejected) of one prompt, a frozen reference.

Pairs come from the initial policy's samples (a correct and an incorrect one, as the paper builds
them) or from a preference file. Each pair is a group of two rows (chosen first) and is never split
across micro-batches; the loss is averaged over the pairs of the whole mini-batch. Other pairwise
losses of the same data (IPO) subclass this one and name their ``pair_loss``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch

from cohort import algo
from cohort.config import Config, ConfigError
from cohort.data.tasks import Task
from cohort.methods.base import Method, TrainingSignal, rows_of, take
from cohort.methods.checks import require_correctness
from cohort.methods.registry import register_method
from cohort.monitoring.panels import Panel
from cohort.optimisation.update import MicroBatch
from cohort.rewards import NamedReward
from cohort.sources import (
    OfflineSamples,
    PreferencePairs,
    SamplePairs,
    ScoredBatch,
    SourcePieces,
    StepTimer,
    check_preference_columns,
)

STATS = ("reward_chosen", "reward_rejected", "margin", "accuracy")


@dataclass
class DPOConfig:
    beta: float = 0.1
    """The scale of the implicit reward beta * log(pi / pi_ref) (DPO's beta; IPO's tau)."""
    length_normalized: bool = False
    """Use per-token means of the log-ratios (DeepSeekMath A.1.4 Eq. 12) instead of sums (standard DPO)."""
    pairs: Literal["samples", "dataset"] = "samples"
    """samples: (correct, incorrect) pairs from the initial policy's samples of each prompt (the paper); dataset: chosen/rejected columns of the training file."""
    chosen_column: str = "chosen"
    """pairs=dataset: the column holding the preferred completion."""
    rejected_column: str = "rejected"
    """pairs=dataset: the column holding the dispreferred completion."""
    pairs_per_prompt: int = 1
    """pairs=samples: at most this many distinct (correct, incorrect) pairs per prompt."""

    def check(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"dpo.beta={self.beta!r} is not allowed: expected a float > 0")
        if self.pairs_per_prompt < 1:
            raise ConfigError(f"dpo.pairs_per_prompt={self.pairs_per_prompt!r} is not allowed: expected an int >= 1")


@register_method
class DPO(Method):
    name = "dpo"
    summary = "offline (correct, incorrect) pairs of the initial policy or a preference file; sigmoid-weighted +/- gradient"
    samples = "offline"
    config_section = ("dpo", DPOConfig)
    reads = frozenset({"offline.*", "train.batch_size"})
    panels = (
        Panel("dpo-rewards", "DPO implicit rewards (beta x log-ratio, mean over pairs)", "reward",
              (("dpo/reward_chosen", "chosen"), ("dpo/reward_rejected", "rejected"), ("dpo/margin", "margin"))),
        Panel("dpo-accuracy", "DPO preference accuracy (margin > 0)", "fraction", (("dpo/accuracy", "accuracy"),)),
    )
    unit = "group"
    micro_unit = "group"  # the loss of a pair needs both its rows
    pair_loss = "sigmoid"
    """The registered pairwise loss (``cohort.algo.PAIR_LOSSES``) of h = log-ratio chosen - log-ratio rejected."""

    @classmethod
    def check(cls, config: Config) -> None:
        if config.dpo.pairs == "dataset":
            offline = sorted(key for key in config.user_keys if key.startswith("offline."))
            if offline:
                raise ConfigError(f"{offline[0]} belongs to dpo.pairs=samples (pairs drawn from the initial policy), "
                                  "not dpo.pairs=dataset")
        elif config.offline.samples_per_prompt < 2:
            raise ConfigError(f"offline.samples_per_prompt={config.offline.samples_per_prompt} is not allowed: expected an "
                              "int >= 2 (a pair needs a correct and an incorrect sample of one prompt)")

    @classmethod
    def check_data(cls, config: Config, task: Task, rewards: list[NamedReward]) -> None:
        if config.dpo.pairs == "dataset":
            check_preference_columns(task, (config.dpo.chosen_column, config.dpo.rejected_column), "dpo.pairs=dataset")
        else:
            require_correctness(f"{cls.name} (dpo.pairs=samples)", rewards)

    @classmethod
    def needs_reference(cls, config: Config) -> bool:
        return True

    def source(self, pieces: SourcePieces):
        settings = self.config.dpo
        if settings.pairs == "dataset":
            return PreferencePairs(pieces, columns=(settings.chosen_column, settings.rejected_column))
        return SamplePairs(pieces, OfflineSamples(pieces), pairs_per_prompt=settings.pairs_per_prompt)

    def signal(self, batch: ScoredBatch, timer: StepTimer) -> TrainingSignal:
        rollout = batch.rollout
        everything = torch.ones(rollout.num_completions, dtype=torch.bool, device=rollout.completion_ids.device)
        started = time.perf_counter()
        ref = self.no_grad_logprobs(self.context.reference, rollout, rows_of(everything))  # [N, T]
        timer.logprob += time.perf_counter() - started
        return TrainingSignal(rollout.completion_mask, everything, {"ref_logprobs": ref})

    def normalizers(self, signal: TrainingSignal, rows: list[int]) -> algo.LossNormalizers:
        mask = signal.loss_mask[rows]
        return algo.LossNormalizers(num_sequences=len(rows) // 2, num_tokens=mask.sum(), num_first_tokens=mask.any(-1).sum())

    def loss(self, micro: MicroBatch, signal: TrainingSignal, norm: algo.LossNormalizers):
        chosen = (micro.rows % 2 == 0).nonzero().flatten()  # positions in the micro-batch, one per pair
        rejected = chosen + 1  # the rejected row follows its chosen row (a group of two is never split)
        ref = take(signal.tensors["ref_logprobs"], micro)  # [n, T']
        return algo.dpo_loss(
            micro.logprobs[chosen], micro.logprobs[rejected], ref[chosen], ref[rejected],
            micro.mask[chosen], micro.mask[rejected],
            beta=self.config.dpo.beta, length_normalized=self.config.dpo.length_normalized, num_pairs=norm.num_sequences,
            loss=self.pair_loss,
        )

    def metrics(self, batch: ScoredBatch, signal: TrainingSignal, stats: dict[str, float]) -> dict[str, float]:
        metrics = {f"dpo/{name}": stats.get(name, float("nan")) for name in STATS}
        if "dataset_pairs" in batch.extras:
            metrics["dpo/dataset_pairs"] = batch.extras["dataset_pairs"]
        return metrics
