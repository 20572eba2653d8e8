"""Online rollouts of the current policy (GRPO, PPO, online RFT), with DAPO's dynamic sampling."""

from __future__ import annotations

from typing import Any

from cohort import algo
from cohort.batches import ScoredBatch
from cohort.data.sampler import PromptSampler
from cohort.data.tasks import rows_at
from cohort.sources.base import SourcePieces, StepTimer, sample_and_score


class OnlineRollouts:
    """Each step: P prompts x G samples of the current policy, scored.

    With ``dynamic_sampling`` (DAPO) only groups whose rewards differ are kept, and more prompts are
    sampled (up to ``max_rounds`` rounds) to refill the batch.
    """

    def __init__(self, pieces: SourcePieces, *, dynamic_sampling: bool = False, max_rounds: int = 1) -> None:
        config = pieces.config
        self.pieces = pieces
        self.prompts_per_step = config.rollout.prompts_per_step
        self.group_size = config.rollout.group_size
        self.dynamic_sampling = dynamic_sampling
        self.max_rounds = max_rounds if dynamic_sampling else 1
        self.sampler = PromptSampler(len(pieces.task.train), seed=config.train.seed, shuffle=config.data.shuffle)

    def prepare(self) -> None:
        """Nothing to prepare: samples are drawn at every step."""

    def next_batch(self, timer: StepTimer) -> ScoredBatch:
        wanted = self.prompts_per_step
        parts, kept, sampled, zero_std = [], 0, 0, 0
        for _ in range(self.max_rounds):
            rows = rows_at(self.pieces.task.train, self.sampler.next_indices(wanted))
            part = sample_and_score(self.pieces, rows, self.group_size, timer)
            sampled, zero_std = sampled + part.sampled_groups, zero_std + part.zero_std_groups
            last_sampled = part
            if self.dynamic_sampling:
                informative = (~algo.degenerate_groups(part.scores.total, part.group_size)).nonzero().flatten().tolist()
                part = part.select_groups(informative[: wanted - kept])
            if part.rollout.num_prompts:
                parts.append(part)
            kept += part.rollout.num_prompts
            if kept >= wanted:
                break
        if not parts:  # nothing informative at all: train on the last round (its advantages are all 0)
            parts = [last_sampled]
        if self.dynamic_sampling and kept < wanted:
            self.pieces.info(f"dynamic sampling: {kept}/{wanted} informative groups after {self.max_rounds} rounds")
        batch = ScoredBatch.concat(parts)
        batch.sampled_groups, batch.zero_std_groups = sampled, zero_std
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
