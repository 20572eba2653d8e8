"""A run that cannot learn stops: when no sample of a step could be scored for reward.max_failed_steps
steps in a row, the run ends with one line naming each reward and its first error (exit code 2),
the failing steps' metrics on disk with their failure counts; a reward that fails only sometimes,
or a limit of 0, trains on."""

from __future__ import annotations

import json

import pytest

from cohort.cli import main

ROWS = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(4) for b in range(4)]


@pytest.fixture()
def args(tmp_path, tiny_llama_dir):
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return [f"model.path={tiny_llama_dir}", f"data.task={task}", "rollout.group_size=2", "rollout.prompts_per_step=2",
            "rollout.max_new_tokens=3", "train.steps=6", "train.eval_before=false", "train.eval_after=false",
            f"train.out_dir={tmp_path / 'run'}", "log.console=quiet", "log.report=false"]


def _metrics(tmp_path):
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("reward", "cause"), [
    ("always_raises", r"reward 'always_raises': sample 0: KeyError: 'answer_text'"),
    ("always_none", r"reward 'always_none': returned None or NaN for every sample"),
])
def test_a_reward_that_never_scores_stops_the_run_in_one_line(args, tmp_path, capsys, reward, cause):
    import re

    code = main(["train", *args, f"reward.functions=[{{name: 'reward_fixtures:{reward}'}}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("cohort: error: no sample could be scored in steps 1-3, so nothing trained ("), err[-1]
    assert re.search(cause, err[-1]) and "reward.max_failed_steps=3" in err[-1]
    assert sum(line.startswith("cohort: error:") for line in err) == 1
    steps = _metrics(tmp_path)
    assert [m["step"] for m in steps] == [1, 2, 3]  # the steps that ran are recorded, with their failures
    assert all(m["reward/none_frac"] == 1.0 for m in steps)
    assert all(m["reward/failures"] == (4 if reward == "always_raises" else 0) for m in steps)
    assert err[-1] in (tmp_path / "run" / "run.log").read_text()


def test_a_limit_of_zero_trains_on(args, tmp_path, capsys):
    assert main(["train", *args, "reward.functions=[{name: 'reward_fixtures:always_none'}]", "reward.max_failed_steps=0"]) == 0
    assert len(_metrics(tmp_path)) == 6


def _facts(totals, first_errors=None, functions=("r",)):
    import torch

    from cohort.training.metrics import BatchFacts

    total = torch.tensor(totals, dtype=torch.float64)
    n = len(totals)
    return BatchFacts(total, {name: total.clone() for name in functions}, {}, None, torch.ones(n, dtype=torch.long),
                      torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool), dict(first_errors or {}))


def test_the_watch_counts_only_consecutive_steps_where_nothing_scored():
    from cohort.training.watches import RewardFailureWatch, RewardsFailed

    nan = float("nan")
    watch = RewardFailureWatch(limit=2)
    watch.observe(1, _facts([nan, nan], {"r": "sample 0: boom"}))
    watch.check()  # one failed step: not yet
    watch.observe(2, _facts([nan, 1.0]))  # one sample scored: the count starts again
    watch.check()
    watch.observe(3, _facts([nan, nan], {"r": "sample 1: first"}))
    watch.observe(4, _facts([nan, nan], {"r": "sample 0: second"}))
    with pytest.raises(RewardsFailed, match=r"steps 3-4, .*reward 'r': sample 1: first\); stopping"):
        watch.check()
    unscored = RewardFailureWatch(limit=1)
    unscored.observe(1, _facts([nan, nan], functions=()))  # SFT targets, preference pairs: no rewards to fail
    unscored.check()
    never = RewardFailureWatch(limit=0)
    for step in range(1, 5):
        never.observe(step, _facts([nan, nan]))
    never.check()
