"""Online rollouts of the current policy (GRPO, PPO, online RFT), with DAPO's dynamic sampling."""

from __future__ import annotations

from typing import Any

from cohort import algo
from cohort.data.sampler import PromptSampler
from cohort.data.tasks import rows_at
from cohort.sources.base import SourcePieces, StepTimer, sample_and_score
from cohort.sources.scored_batch import ScoredBatch


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
        wanted, world = self.prompts_per_step, self.pieces.world
        share = world.share(wanted, "rollout.prompts_per_step")
        parts, kept, sampled, zero_std = [], 0, 0, 0
        for _ in range(self.max_rounds):
            indices = self.sampler.next_indices(wanted)  # the same global draw on every rank
            rows = rows_at(self.pieces.task.train, indices[share])
            shard = (share.start * self.group_size, wanted * self.group_size)
            part = sample_and_score(self.pieces, rows, self.group_size, timer, shard=shard)
            sampled, zero_std = sampled + world.sum(part.sampled_groups), zero_std + world.sum(part.zero_std_groups)
            last_sampled = part
            if self.dynamic_sampling:
                chosen = self._informative(part, share.start, wanted - kept)
                kept += len(chosen)
                part = part.select_groups([g - share.start for g in chosen if share.start <= g < share.stop])
            else:
                kept += wanted
            if part.rollout.num_prompts:
                parts.append(part)
            if kept >= wanted:
                break
        if not parts:  # nothing informative here: train on the last round (its advantages are all 0)
            parts = [last_sampled]
        if self.dynamic_sampling and kept < wanted:
            self.pieces.info(f"dynamic sampling: {kept}/{wanted} informative groups after {self.max_rounds} rounds")
        batch = ScoredBatch.concat(parts)
        batch.sampled_groups, batch.zero_std_groups = sampled, zero_std
        return batch

    def _informative(self, part: ScoredBatch, start: int, room: int) -> list[int]:
        """The first ``room`` groups (in global order, over every rank's share) whose rewards differ."""
        local = (~algo.degenerate_groups(part.scores.total, part.group_size)).nonzero().flatten().tolist()
        everywhere = self.pieces.world.gather([start + group for group in local])
        return sorted(group for groups in everywhere for group in groups)[:room]

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
