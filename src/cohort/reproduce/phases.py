"""The two pieces of a reproduction outside the arms' runs: the shared reward models (trained once on
labelled samples of the initial policy) and the Figure 7 evaluations (K samples per problem)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cohort.records import dumps
from cohort.reproduce.plan import Scale, common_overrides
from cohort.reproduce.runner import ProgressFn, run_directory


def _policy_and_samples(scale: Scale):
    """The initial policy, its tokenizer, and scale.rm_samples of its completions on training prompts."""
    from cohort.assets import resolve_builtin
    from cohort.data.tasks import load_task, rows_at
    from cohort.models.loading import load_policy, load_tokenizer
    from cohort.models.prompts import encode_prompts
    from cohort.rollout import SamplingParams, generate_rollout

    path = resolve_builtin("builtin:multistep")
    policy, tokenizer = load_policy(path), load_tokenizer(path)
    task = load_task("multistep")
    prompts_count = max(1, scale.rm_samples // scale.group)
    order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(12_345)).tolist()
    rows = rows_at(task.train, order[:prompts_count])
    params = SamplingParams(max_new_tokens=scale.max_new_tokens, temperature=1.0, eos_token_ids=(tokenizer.eos_token_id,))
    rollout = generate_rollout(policy, encode_prompts(tokenizer, [r["prompt"] for r in rows]), scale.group, params,
                               pad_token_id=tokenizer.pad_token_id, generator=torch.Generator().manual_seed(54_321), tokenizer=tokenizer)
    prompts = [r["prompt"] for r in rows for _ in range(scale.group)]
    answers = [r["answer"] for r in rows for _ in range(scale.group)]
    return path, policy, tokenizer, params, prompts, answers, rollout.decode_completions(tokenizer)


def train_reward_models(scale: Scale, out: Path, progress: ProgressFn) -> dict[str, Any]:
    """The ORM (rule labels) and the PRM (Math-Shepherd Monte-Carlo step labels) the GRPO arms use."""
    from cohort.reward_training import (
        OutcomeExample,
        train_outcome_model,
        train_process_model,
    )
    from cohort.reward_training.labels import monte_carlo_step_labels
    from cohort.rewards.multistep import FinalAnswerReward

    directory = out / "reward_models"
    summary_path = directory / "summary.json"
    if summary_path.is_file():
        progress("reward models already trained: skipped")
        return json.loads(summary_path.read_text())
    progress(f"reward models: labelling {scale.rm_samples} samples of the initial policy")
    path, policy, tokenizer, params, prompts, answers, completions = _policy_and_samples(scale)
    rule = FinalAnswerReward()
    correct = rule(prompts, completions, answer=answers)
    outcome = [OutcomeExample(p, c, float(ok)) for p, c, ok in zip(prompts, completions, correct)]
    labelling = monte_carlo_step_labels(policy, tokenizer, prompts, completions, answers, rule, rollouts=scale.mc_rollouts,
                                        params=params, generator=torch.Generator().manual_seed(777), columns={"answer": answers})
    options = {"epochs": 3, "lr": 1e-3, "batch_size": 32, "held_out_fraction": 0.15, "seed": 0}
    orm = train_outcome_model(outcome, path, directory / "orm", **options)
    prm = train_process_model(labelling.process_examples(prompts), path, directory / "prm", **options)
    summary = {
        "samples": len(completions), "correct_fraction": sum(correct) / len(correct),
        "orm": orm.held_out.to_dict() if orm.held_out else None, "prm": prm.held_out.to_dict() if prm.held_out else None,
        "labelling_cost": labelling.cost.to_dict(),
    }
    summary_path.write_text(dumps(summary, indent=1))
    return summary


def figure7(scale: Scale, out: Path, seeds: list[int], progress: ProgressFn) -> dict[str, Any]:
    """pass@K and maj@K, K = 1, 2, 4, .. fig7_samples, of the initial model and of GRPO+OS's final models."""
    from cohort.config import load_config
    from cohort.data.tasks import task_from_settings
    from cohort.evaluation.held_out import evaluate_held_out
    from cohort.models.loading import load_policy, load_tokenizer
    from cohort.rewards.configured import run_rewards

    directory = out / "figure7"
    directory.mkdir(parents=True, exist_ok=True)
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= scale.fig7_samples]
    models = {"before": "builtin:multistep", **{f"after-seed-{s}": str(run_directory(out, "grpo_os", s) / "final") for s in seeds}}
    results = {}
    for label, model in models.items():
        path = directory / f"{label}.json"
        if not path.is_file():
            progress(f"figure 7: {scale.fig7_samples} samples per problem for {label}")
            config = load_config(None, common_overrides(scale, 0, out / "scratch") + [f"data.eval_limit={scale.fig7_problems}"])
            task = task_from_settings(config.data, config.train.seed)
            from cohort.assets import resolve_builtin

            location = resolve_builtin(model)
            summary, _ = evaluate_held_out(config, task, load_policy(location), load_tokenizer(location), run_rewards(config, task),
                                           num_samples=scale.fig7_samples, ks=ks, seed=2024)
            path.write_text(dumps(summary.to_dict(), indent=1))
        results[label] = json.loads(path.read_text())
    return results
