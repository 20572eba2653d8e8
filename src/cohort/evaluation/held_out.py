"""Held-out evaluation of a run's model: the same prompts, sampling and rewards as training, on the
task's held-out split; pass@k, maj@k and greedy accuracy written next to the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from cohort.config import Config
from cohort.data.files import DatasetError
from cohort.data.tasks import Task, row_columns, rows_at
from cohort.evaluation.evaluate import EvalSummary, ProblemResult, evaluate
from cohort.models.loading import autocast_context, eos_token_ids
from cohort.models.prompts import task_renderer
from cohort.records import dumps
from cohort.rewards import NamedReward, RewardScorer, correctness_reward
from cohort.rollout import SamplingParams
from cohort.rollout.engines import NATIVE, RolloutEngine


def held_out_rows(task: Task, limit: int | None) -> list[dict[str, Any]]:
    """The task's held-out problems (at most ``limit``); a task without a held-out split is an error."""
    if task.test is None:
        raise DatasetError(
            f"task {task.name!r} has no held-out split: set data.test_path (a second file) or data.test_fraction"
        )
    count = min(len(task.test), limit or len(task.test))
    return rows_at(task.test, list(range(count)))


def evaluate_held_out(
    config: Config,
    task: Task,
    model,
    tokenizer,
    rewards: list[NamedReward],
    *,
    num_samples: int,
    ks: list[int] | None = None,
    seed: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    engine: RolloutEngine = NATIVE,
) -> tuple[EvalSummary, list[ProblemResult]]:
    """Evaluate ``model`` on the task's held-out split exactly as training samples and scores
    (with the run's rollout ``engine``)."""
    correctness = correctness_reward(rewards)
    if correctness is None:
        raise DatasetError("evaluation needs a correctness reward (exact_match, math, code, ...) among reward.functions")
    rows = held_out_rows(task, config.data.eval_limit)
    renderer = task_renderer(tokenizer, task, template=config.data.prompt_template, chat=config.model.chat_template,
                             system_prompt=config.model.system_prompt)
    prompts = [renderer.prompt(row) for row in rows]
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.train.seed + 1 if seed is None else seed)
    params = SamplingParams.for_run(config.rollout, eos_token_ids(tokenizer, getattr(model, "generation_config", None)))
    with autocast_context(device, config.model.autocast):
        return evaluate(
            model,
            tokenizer,
            prompts,
            renderer.encode(prompts),
            row_columns(rows),
            correctness=correctness,
            scorer=RewardScorer(rewards, timeout_s=config.reward.timeout_s, strict=config.reward.strict),
            params=params,
            num_samples=num_samples,
            generator=generator,
            ks=ks,
            answer_column=task.answer_column,
            on_progress=on_progress,
            engine=engine,
        )


def write_eval(summary: EvalSummary, problems: list[ProblemResult], summary_path: Path, problems_path: Path) -> None:
    """Summary JSON and one JSON line per problem."""
    summary_path.write_text(dumps(summary.to_dict()))
    with problems_path.open("w", encoding="utf-8") as handle:
        for problem in problems:
            handle.write(dumps(problem.__dict__) + "\n")


def read_eval(summary_path: Path) -> EvalSummary:
    return EvalSummary.from_dict(json.loads(summary_path.read_text()))
