"""What every data source shares: the pieces it draws on, the step timer, and scoring a rollout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from cohort import algo
from cohort.sources.scored_batch import ScoredBatch, per_sample_columns
from cohort.training.checkpoint import RunDirectory
from cohort.components import PromptRenderer
from cohort.config import Config
from cohort.data.tasks import Task, row_columns
from cohort.distributed import World
from cohort.rewards import NamedReward, RewardFunctionError, RewardScorer
from cohort.rewards.process_model import StepScores
from cohort.rollout import Rollout, SamplingParams, generate_rollout

logger = logging.getLogger(__name__)


@dataclass
class StepTimer:
    """Seconds spent in each phase of a step."""

    rollout: float = 0.0
    reward: float = 0.0
    logprob: float = 0.0
    train: float = 0.0
    started: float = field(default_factory=time.perf_counter)


@dataclass
class SourcePieces:
    """Everything a source may need, built once by the trainer."""

    config: Config
    task: Task
    renderer: PromptRenderer
    tokenizer: Any
    policy: torch.nn.Module
    rewards: list[NamedReward]
    scorer: RewardScorer
    correctness: NamedReward | None
    sampling: SamplingParams
    generator: torch.Generator
    autocast: Callable[[], AbstractContextManager]
    run_dir: RunDirectory
    info: Callable[[str], None]
    process_model: Any = None
    world: World = World()


class Source(Protocol):
    """A stream of training batches whose position can be saved and restored."""

    def prepare(self) -> None:
        """One-time work before the first step (e.g. drawing offline samples); idempotent."""

    def next_batch(self, timer: StepTimer) -> ScoredBatch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def correct_mask(pieces: SourcePieces, per_function: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """[N] bool: the correctness reward scored the sample 1 (None when no reward measures correctness)."""
    if pieces.correctness is None:
        return None
    scores = per_function[pieces.correctness.name]
    return ~torch.isnan(scores) & (scores >= 1.0 - 1e-9)


def score_steps(pieces: SourcePieces, prompts: list[Any], completions: list[str], rollout: Rollout) -> list[StepScores | None]:
    """Process-reward step scores; a failing PRM scores nothing this step (None) unless strict."""
    try:
        return pieces.process_model(prompts, completions, rollout.completion_token_lists())
    except Exception as err:
        if pieces.config.reward.strict:
            raise RewardFunctionError(f"process reward model failed: {err}") from err
        logger.warning("process reward model failed (%s); this step's samples get no advantage", err)
        return [None] * len(completions)


def sample_and_score(pieces: SourcePieces, rows: list[dict[str, Any]], group_size: int, timer: StepTimer,
                     generator: torch.Generator | None = None, shard: tuple[int, int] | None = None) -> ScoredBatch:
    """Roll out ``group_size`` completions of the current policy for each row's prompt and score them.

    ``shard = (offset, total)``: these rows' completions are rows ``offset ..`` of a batch of ``total``
    spread over data-parallel ranks (their samples equal those of one process drawing the whole batch).
    """
    prompts = [pieces.renderer.prompt(row) for row in rows]
    started = time.perf_counter()
    with pieces.autocast():
        rollout = generate_rollout(
            pieces.policy,
            pieces.renderer.encode(prompts),
            group_size,
            pieces.sampling,
            pad_token_id=pieces.tokenizer.pad_token_id,
            generator=generator if generator is not None else pieces.generator,
            tokenizer=pieces.tokenizer,
            shard=shard,
        )
    completions = rollout.decode_completions(pieces.tokenizer)
    timer.rollout += time.perf_counter() - started
    started = time.perf_counter()
    columns = row_columns(rows)
    reward_prompts = [p for p in prompts for _ in range(rollout.group_size)]
    scores = pieces.scorer.score(reward_prompts, completions, per_sample_columns(columns, rollout))
    zero_std = int(algo.degenerate_groups(scores.total, rollout.group_size).sum())
    steps = score_steps(pieces, reward_prompts, completions, rollout) if pieces.process_model else None
    timer.reward += time.perf_counter() - started
    return ScoredBatch(
        rollout, prompts, columns, completions, scores, sampled_groups=len(rows), zero_std_groups=zero_std,
        steps=steps, correct=correct_mask(pieces, scores.per_function),
    )
