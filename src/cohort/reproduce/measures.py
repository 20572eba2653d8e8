"""What a run's held-out completions show beyond pass@1: the gold checker's view of their steps,
their format, and how well a learned reward model ranks them.

Read from the initial policy's ``eval_before.jsonl`` (evaluated once per seed) and a run's
``eval_after.jsonl`` (its final policy): every sampled completion of every held-out problem. Per
completion set:

* ``gold_step_accuracy``: the share of all step lines the gold checker accepts;
* ``right_with_wrong_step``: among right answers (the rule), the share with a wrong step;
* ``fully_correct``: the share of completions that are the gold solution (every step right, none missing);
* ``malformed_lines``: the share of step lines that are not one ``a+b=c`` operation (merged, garbled);
* ``steps``: the mean number of steps per completion;
* ``rm_within_group_auc``: a learned reward model's within-group AUC against the rule (samples of one
  problem compared; a PRM scores a completion by its weakest step), at the start and at the end.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from cohort.data.multistep import check_steps, completion_steps, first_error, is_step_line
from cohort.reward_training.metrics import within_group_auc

MEASURES = ("gold_step_accuracy", "right_with_wrong_step", "fully_correct", "malformed_lines", "steps")


def read_problems(path: Path) -> list[dict[str, Any]]:
    """The per-problem lines of an evaluation (``eval_*.jsonl``)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def completion_measures(problems: list[dict[str, Any]]) -> dict[str, float]:
    """The gold checker's and the format's view of every sampled completion (see the module docstring)."""
    lines = right_lines = malformed = right = right_unsound = fully = completions = 0
    steps: list[int] = []
    for problem in problems:
        for text, ok in zip(problem["completions"], problem["correct"]):
            verdicts = check_steps(problem["prompt"], text)
            written = completion_steps(text)
            completions += 1
            lines += len(verdicts)
            right_lines += sum(verdicts)
            malformed += sum(not is_step_line(step) for step in written)
            steps.append(len(written))
            fully += first_error(problem["prompt"], text) is None
            if ok:
                right += 1
                right_unsound += not all(verdicts)
    nan = float("nan")
    return {
        "gold_step_accuracy": right_lines / lines if lines else nan,
        "right_with_wrong_step": right_unsound / right if right else nan,
        "fully_correct": fully / completions if completions else nan,
        "malformed_lines": malformed / lines if lines else nan,
        "steps": statistics.fmean(steps) if steps else nan,
    }


def reward_model_scores(path: str, kind: str, problems: list[dict[str, Any]]) -> list[float]:
    """One score per sampled completion (problem by problem): the ORM's, or the PRM's weakest step."""
    from cohort.assets import resolve_builtin
    from cohort.models.loading import load_tokenizer
    from cohort.rewards import build_reward
    from cohort.rewards.process_model import ProcessRewardModel

    prompts = [p["prompt"] for p in problems for _ in p["completions"]]
    texts = [text for p in problems for text in p["completions"]]
    if kind == "outcome":
        return [float(s) for s in build_reward({"name": "reward_model", "path": path, "device": "cpu"}).fn(prompts, texts)]
    tokenizer = load_tokenizer(resolve_builtin("builtin:multistep"))
    prm = ProcessRewardModel(path, tokenizer, device="cpu", batch_size=64)
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    return [min(s.rewards) if s is not None and s.rewards else 0.0 for s in prm(prompts, texts, ids)]


def rm_within_group_auc(path: str, kind: str, problems: list[dict[str, Any]]) -> float | None:
    """The reward model's within-group AUC against the rule on these completions (None: no mixed group)."""
    scores = reward_model_scores(path, kind, problems)
    positive = [bool(ok) for p in problems for ok in p["correct"]]
    groups = [p["index"] for p in problems for _ in p["completions"]]
    return within_group_auc(scores, positive, groups)[0]


def run_measures(directory: Path, initial: Path, reward_model: str | None, final_reward_model: str | None,
                 kind: str) -> dict[str, Any]:
    """Measures of one run at its start (``initial``: the seed's initial evaluation) and end (cached in
    ``measures.json``: a finished run's are final)."""
    cache = directory / "measures.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    before, after = read_problems(initial / "eval_before.jsonl"), read_problems(directory / "eval_after.jsonl")
    result: dict[str, Any] = {"start": completion_measures(before), "end": completion_measures(after)}
    if reward_model is not None:
        result["start"]["rm_within_group_auc"] = rm_within_group_auc(reward_model, kind, before)
        result["end"]["rm_within_group_auc"] = rm_within_group_auc(final_reward_model or reward_model, kind, after)
    cache.write_text(json.dumps(result, indent=1))
    return result
