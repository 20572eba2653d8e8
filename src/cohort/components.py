"""The pieces a run is made of, built from a Config: shared by ``cohort train`` and ``cohort eval``.

Task, rewards, prompt rendering and sampling settings come from here so that training and
evaluation see prompts and scores in exactly the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from cohort.assets import resolve_builtin
from cohort.config import Config
from cohort.data.files import DatasetError
from cohort.data.tasks import Task, format_prompt, load_task, row_columns, rows_at
from cohort.evaluation.evaluate import EvalSummary, ProblemResult, evaluate
from cohort.models import autocast_context, encode_prompts, eos_token_ids
from cohort.monitoring.console import dumps
from cohort.rewards import NamedReward, RewardScorer, SoftOverlongPunishment, build_reward, correctness_reward
from cohort.rewards.registry import reward_label
from cohort.rollout import SamplingParams


def load_config_task(config: Config) -> Task:
    """The task named by ``config.data``, rows checked."""
    data = config.data
    return load_task(
        data.task,
        seed=config.train.seed,
        test_path=data.test_path,
        test_fraction=data.test_fraction,
        prompt_column=data.prompt_column,
        answer_column=data.answer_column,
        data_format=data.format,
        question_column=data.question_column,
        solution_column=data.solution_column,
    )


def build_rewards(config: Config, task: Task) -> list[NamedReward]:
    """The configured reward functions (or the task's defaults), plus DAPO's overlong penalty.

    With ``reward.backend: ray`` each function runs on Ray actors (built there from its spec).
    """
    specs = config.reward.functions or list(task.default_rewards)
    if config.reward.backend == "ray":
        from cohort.rewards.ray_backend import RayReward, connect

        r = config.reward
        connect(r.ray_address)
        rewards = [NamedReward(reward_label(spec), RayReward(spec, workers=r.ray_workers, chunk_size=r.ray_chunk_size,
                                                             timeout_s=r.timeout_s), float(spec.get("weight", 1.0)))
                   for spec in specs]
    else:
        rewards = [build_reward(spec) for spec in specs]
    fraction = config.algorithm.overlong_buffer
    if fraction > 0:
        budget = config.rollout.max_new_tokens
        rewards.append(NamedReward("soft_overlong", SoftOverlongPunishment(budget, max(1, round(fraction * budget))), 1.0))
    return rewards


@dataclass
class PromptRenderer:
    """Row -> prompt (template, optional chat format with a system message) -> token ids."""

    tokenizer: Any
    template: str
    prompt_column: str
    chat: bool = False
    system_prompt: str | None = None

    @classmethod
    def from_config(cls, config: Config, task: Task, tokenizer) -> "PromptRenderer":
        renderer = cls(tokenizer, config.data.prompt_template, task.prompt_column, config.model.chat_template, config.model.system_prompt)
        renderer.prompt(task.train[0])  # a template that doesn't fit the rows fails now, not mid-run
        return renderer

    def prompt(self, row: dict[str, Any]) -> Any:
        prompt = format_prompt(row, self.template, self.prompt_column)
        if self.chat and self.system_prompt and isinstance(prompt, str):
            return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}]
        return prompt

    def encode(self, prompts: list[Any]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, prompts, chat=self.chat)


def sampling_params(config: Config, tokenizer, model) -> SamplingParams:
    """The rollout's sampling settings; EOS ids from the tokenizer and the model's generation config."""
    rollout = config.rollout
    return SamplingParams(
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k or None,
        max_new_tokens=rollout.max_new_tokens,
        eos_token_ids=eos_token_ids(tokenizer, getattr(model, "generation_config", None)),
        stop_strings=tuple(rollout.stop),
    )


def model_path(config: Config) -> str:
    return resolve_builtin(config.model.path)


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
) -> tuple[EvalSummary, list[ProblemResult]]:
    """Evaluate ``model`` on the task's held-out split exactly as training samples and scores."""
    correctness = correctness_reward(rewards)
    if correctness is None:
        raise DatasetError("evaluation needs a correctness reward (exact_match, math, code, ...) among reward.functions")
    rows = held_out_rows(task, config.data.eval_limit)
    renderer = PromptRenderer.from_config(config, task, tokenizer)
    prompts = [renderer.prompt(row) for row in rows]
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.train.seed + 1 if seed is None else seed)
    with autocast_context(device, config.model.autocast):
        return evaluate(
            model,
            tokenizer,
            prompts,
            renderer.encode(prompts),
            row_columns(rows),
            correctness=correctness,
            scorer=RewardScorer(rewards, timeout_s=config.reward.timeout_s, strict=config.reward.strict),
            params=sampling_params(config, tokenizer, model),
            num_samples=num_samples,
            generator=generator,
            ks=ks,
            answer_column=task.answer_column,
            on_progress=on_progress,
        )


def write_eval(summary: EvalSummary, problems: list[ProblemResult], summary_path: Path, problems_path: Path) -> None:
    """Summary JSON and one JSON line per problem."""
    summary_path.write_text(dumps(summary.to_dict()))
    with problems_path.open("w", encoding="utf-8") as handle:
        for problem in problems:
            handle.write(dumps(problem.__dict__) + "\n")


def read_eval(summary_path: Path) -> EvalSummary:
    return EvalSummary.from_dict(json.loads(summary_path.read_text()))
