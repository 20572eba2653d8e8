"""What every data source shares: the policy's sampler, the scoring stage, the step timer, and
sampling-then-scoring a batch of prompts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from cohort import algo
from cohort.config import Config
from cohort.data.tasks import Task, row_columns
from cohort.distributed import World
from cohort.models.prompts import PromptRenderer
from cohort.rewards import (
    NamedReward,
    RewardFunctionError,
    RewardScorer,
    RewardScores,
    correctness_reward,
)
from cohort.rewards.process_model import StepScores
from cohort.rollout import Rollout, SamplingParams
from cohort.rollout.engines import NATIVE, RolloutEngine
from cohort.run_directory import RunDirectory
from cohort.sources.scored_batch import ScoredBatch, per_sample_columns

logger = logging.getLogger(__name__)


@dataclass
class StepTimer:
    """Seconds spent in each phase of a step."""

    rollout: float = 0.0
    reward: float = 0.0
    logprob: float = 0.0
    train: float = 0.0
    started: float = field(default_factory=time.perf_counter)


@dataclass(kw_only=True)
class PolicySampler:
    """Draws completions of the current policy for rendered prompts with the run's rollout engine."""

    policy: torch.nn.Module
    tokenizer: Any
    renderer: PromptRenderer
    params: SamplingParams
    generator: torch.Generator
    autocast: Callable[[], AbstractContextManager]
    engine: RolloutEngine = NATIVE

    def sample(self, prompts: list[Any], group_size: int, generator: torch.Generator | None = None,
               shard: tuple[int, int] | None = None) -> Rollout:
        with self.autocast():
            return self.engine.generate(
                self.policy,
                self.renderer.encode(prompts),
                group_size,
                self.params,
                pad_token_id=self.tokenizer.pad_token_id,
                generator=generator if generator is not None else self.generator,
                tokenizer=self.tokenizer,
                shard=shard,
            )


@dataclass(kw_only=True)
class ScoringStage:
    """How samples are scored: the reward functions (weighted, each failure isolated), the one among
    them that decides correctness, and the process reward model of process supervision. Iterative RL
    swaps the whole stage when it retrains a reward model."""

    rewards: list[NamedReward]
    timeout_s: float
    strict: bool
    process_model: Any = None  # (prompts, completions, completion ids) -> [StepScores | None]

    def __post_init__(self) -> None:
        self.scorer = RewardScorer(self.rewards, timeout_s=self.timeout_s, strict=self.strict)
        self.correctness = correctness_reward(self.rewards)

    def replaced(self, *, rewards: list[NamedReward] | None = None, process_model: Any = None) -> "ScoringStage":
        """The same stage with other rewards or another process reward model."""
        return ScoringStage(rewards=self.rewards if rewards is None else rewards, timeout_s=self.timeout_s,
                            strict=self.strict, process_model=process_model or self.process_model)

    def correct_mask(self, per_function: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """[N] bool: the correctness reward scored the sample 1 (None when no reward measures correctness)."""
        if self.correctness is None:
            return None
        scores = per_function[self.correctness.name]
        return ~torch.isnan(scores) & (scores >= 1.0 - 1e-9)

    def score_steps(self, prompts: list[Any], completions: list[str], rollout: Rollout) -> list[StepScores | None]:
        """Process-reward step scores; a failing PRM scores nothing this step (None) unless strict."""
        try:
            return self.process_model(prompts, completions, rollout.completion_token_lists())
        except Exception as err:
            if self.strict:
                raise RewardFunctionError(f"process reward model failed: {err}") from err
            logger.warning("process reward model failed (%s); this step's samples get no advantage", err)
            return [None] * len(completions)

    def score(self, prompts: list[Any], completions: list[str], columns: dict[str, list[Any]],
              rollout: Rollout) -> tuple[RewardScores, list[StepScores | None] | None]:
        """Scores of every sample (and step scores when a process reward model is set)."""
        scores = self.scorer.score(prompts, completions, columns)
        steps = self.score_steps(prompts, completions, rollout) if self.process_model else None
        return scores, steps


@dataclass(kw_only=True)
class SourcePieces:
    """Everything a source may need, built once by the trainer."""

    config: Config
    task: Task
    sampler: PolicySampler
    scoring: ScoringStage
    run_dir: RunDirectory
    info: Callable[[str], None]
    world: World = field(default_factory=World)
    progress: Callable[[str], AbstractContextManager[Callable[[int, int], None]]] = lambda description: nullcontext(lambda done, total: None)
    """A long phase's progress display: ``with progress("...") as update: update(done, total)``."""
    stop_requested: Callable[[], bool] = lambda: False
    """Whether the user asked the run to stop (Ctrl-C, SIGTERM): long phases check it between chunks."""


class Source(Protocol):
    """A stream of training batches whose position can be saved and restored."""

    def prepare(self) -> None:
        """One-time work before the first step (e.g. drawing offline samples); idempotent."""

    def next_batch(self, timer: StepTimer) -> ScoredBatch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def sample_and_score(pieces: SourcePieces, rows: list[dict[str, Any]], group_size: int, timer: StepTimer,
                     generator: torch.Generator | None = None, shard: tuple[int, int] | None = None) -> ScoredBatch:
    """Roll out ``group_size`` completions of the current policy for each row's prompt and score them.

    ``shard = (offset, total)``: these rows' completions are rows ``offset ..`` of a batch of ``total``
    spread over data-parallel ranks (their samples equal those of one process drawing the whole batch).
    """
    prompts = [pieces.sampler.renderer.prompt(row) for row in rows]
    started = time.perf_counter()
    rollout = pieces.sampler.sample(prompts, group_size, generator, shard)
    completions = rollout.decode_completions(pieces.sampler.tokenizer)
    timer.rollout += time.perf_counter() - started
    started = time.perf_counter()
    columns = row_columns(rows)
    reward_prompts = [p for p in prompts for _ in range(rollout.group_size)]
    scoring = pieces.scoring
    scores, steps = scoring.score(reward_prompts, completions, per_sample_columns(columns, rollout), rollout)
    zero_std = int(algo.degenerate_groups(scores.total, rollout.group_size).sum())
    timer.reward += time.perf_counter() - started
    return ScoredBatch(
        rollout, prompts, columns, completions, scores, sampled_groups=len(rows), zero_std_groups=zero_std,
        steps=steps, correct=scoring.correct_mask(scores.per_function),
    )
