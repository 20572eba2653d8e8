"""DPO (DeepSeekMath A.1.4, spec §1.2): pairs (chosen, rejected) of one prompt, a frozen reference.

Pairs come from the initial policy's samples (a correct and an incorrect one, as the paper builds
them) or from a preference file. Each pair is a group of two rows (chosen first) and is never split
across micro-batches; the loss is averaged over the pairs of the whole mini-batch.
"""

from __future__ import annotations

import time

import torch

from cohort import algo
from cohort.sources.scored_batch import ScoredBatch
from cohort.config import Config, ConfigError
from cohort.data.tasks import Task
from cohort.methods.base import Method, TrainingSignal, rows_of, take
from cohort.methods.coefficient import require_correctness
from cohort.methods.registry import register_method
from cohort.optimisation.update import MicroBatch
from cohort.rewards import NamedReward
from cohort.sources import OfflineSamples, PreferencePairs, SamplePairs, SourcePieces, StepTimer, check_preference_columns

STATS = ("reward_chosen", "reward_rejected", "margin", "accuracy")


@register_method
class DPO(Method):
    name = "dpo"
    summary = "offline (correct, incorrect) pairs of the initial policy or a preference file; sigmoid-weighted +/- gradient"
    unit = "group"
    micro_unit = "group"  # the loss of a pair needs both its rows
    sections = frozenset({"dpo", "offline"})
    takes_batch_size = True

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
            check_preference_columns(config, task)
        else:
            require_correctness("dpo (dpo.pairs=samples)", rewards)

    @classmethod
    def needs_reference(cls, config: Config) -> bool:
        return True

    def source(self, pieces: SourcePieces):
        if self.config.dpo.pairs == "dataset":
            return PreferencePairs(pieces)
        return SamplePairs(pieces, OfflineSamples(pieces))

    def signal(self, batch: ScoredBatch, timer: StepTimer) -> TrainingSignal:
        rollout = batch.rollout
        everything = torch.ones(rollout.num_completions, dtype=torch.bool, device=rollout.completion_ids.device)
        started = time.perf_counter()
        ref = self.no_grad_logprobs(self.context.reference, rollout, rows_of(everything))  # [N, T]
        timer.logprob += time.perf_counter() - started
        return TrainingSignal(rollout.completion_mask, everything, {"ref_logprobs": ref}, dict(batch.extras))

    def normalizers(self, signal: TrainingSignal, rows: list[int]) -> algo.LossNormalizers:
        mask = signal.loss_mask[rows]
        return algo.LossNormalizers(num_sequences=len(rows) // 2, num_tokens=mask.sum(), num_first_tokens=mask.any(-1).sum())

    def loss(self, micro: MicroBatch, signal: TrainingSignal, norm: algo.LossNormalizers):
        chosen = (micro.rows % 2 == 0).nonzero().flatten()  # positions in the micro-batch, one per pair
        rejected = chosen + 1  # the rejected row follows its chosen row (a group of two is never split)
        ref = take(signal.tensors["ref_logprobs"], micro)  # [n, T']
        loss, stats = algo.dpo_loss(
            micro.logprobs[chosen], micro.logprobs[rejected], ref[chosen], ref[rejected],
            micro.mask[chosen], micro.mask[rejected],
            beta=self.config.dpo.beta, length_normalized=self.config.dpo.length_normalized, num_pairs=norm.num_sequences,
        )
        return loss, stats

    def metrics(self, batch: ScoredBatch, signal: TrainingSignal, stats: dict[str, float]) -> dict[str, float]:
        return {f"dpo/{name}": stats.get(name, float("nan")) for name in STATS}
