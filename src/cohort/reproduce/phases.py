"""The pieces of a reproduction outside the arms' runs: the shipped reward models' held-out numbers
and the quality gate that stops a run before any training when the learned PRM cannot rank the
samples of one prompt; and the initial policy's held-out evaluation, once per seed (every arm of a
seed starts from it, so the runs themselves skip theirs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cohort.records import dumps
from cohort.reproduce.plan import ORM, PRM, Arm, Scale, common_overrides
from cohort.reproduce.runner import ProgressFn


def initial_directory(out: Path, seed: int) -> Path:
    """Where the initial policy's evaluation for seed ``seed`` lives (eval_before.json and .jsonl)."""
    return out / "initial" / f"seed-{seed}"


def initial_evaluations(scale: Scale, out: Path, seeds: list[int], progress: ProgressFn) -> None:
    """The initial policy on the held-out problems, as the runs of seed s would evaluate it (skipped when done)."""
    from cohort.assets import resolve_builtin
    from cohort.config import load_config
    from cohort.data.tasks import task_from_settings
    from cohort.evaluation.held_out import evaluate_held_out, write_eval
    from cohort.models.loading import load_policy, load_tokenizer
    from cohort.rewards.configured import run_rewards

    for seed in seeds:
        directory = initial_directory(out, seed)
        if (directory / "eval_before.json").is_file():
            continue
        progress(f"evaluating the initial policy for seed {seed}")
        directory.mkdir(parents=True, exist_ok=True)
        config = load_config(None, common_overrides(scale, seed, out / "scratch"))
        task = task_from_settings(config.data, config.train.seed)
        path = resolve_builtin("builtin:multistep")
        summary, problems = evaluate_held_out(config, task, load_policy(path), load_tokenizer(path), run_rewards(config, task),
                                              num_samples=config.train.eval_samples)
        write_eval(summary, problems, directory / "eval_before.json.tmp", directory / "eval_before.jsonl")
        (directory / "eval_before.json.tmp").rename(directory / "eval_before.json")  # the done marker, written last


def _shipped(name: str) -> dict[str, Any]:
    """What a shipped reward model's training.json says (held-out metrics, labels, the seeds' spread)."""
    from cohort.assets import resolve_builtin

    report = json.loads((Path(resolve_builtin(name)) / "training.json").read_text())
    return {key: report.get(key) for key in ("held_out", "held_out_before", "held_out_by_operations", "labels", "seed_spread",
                                             "train_examples", "held_out_examples", "best_epoch", "epoch_losses")}


def reward_models(scale: Scale, out: Path, arms: tuple[Arm, ...], progress: ProgressFn, gate: float | None) -> dict[str, Any]:
    """The shipped ORM's and PRM's numbers (written to reward_models/summary.json) after the gate:
    a ValueError (one line) when an arm trains against the PRM and its held-out within-group AUC is
    below ``gate``."""
    summary = {"prm": _shipped(PRM), "orm": _shipped(ORM), "gate": gate}
    auc = (summary["prm"]["held_out"] or {}).get("within_group_auc")
    users = [arm.name for arm in arms if arm.reward_model == PRM]
    if gate is not None and users and (auc is None or auc < gate):
        raise ValueError(f"the quality gate stops this reproduction: the shipped PRM ({PRM}) ranks the samples of one prompt "
                         f"with held-out within-group AUC {auc if auc is None else round(auc, 3)}, below --rm-gate {gate}, "
                         f"and {', '.join(users)} train against it (pass --rm-gate 0 to run them anyway)")
    if users:
        verdict = f"passes the gate {gate}" if gate is not None else "(the gate is off)"
        progress(f"reward models: the shipped PRM's held-out within-group AUC {auc:.3f} {verdict}")
    directory = out / "reward_models"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(dumps(summary, indent=1))
    return summary
