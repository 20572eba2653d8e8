"""Iterative RL (DeepSeekMath Algorithm 1) on the bundled multi-step model: the reward model is trained
first, retrained each iteration on fresh policy samples plus a replay share, swapped in, and the
reference reset; every iteration's data and model stay in the run directory; resume is exact."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from cohort.config import ConfigError, load_config
from cohort.methods import check_config
from cohort.monitoring.console import RunConsole
from cohort.report import write_report
from cohort.training.trainer import Trainer

pytestmark = pytest.mark.timeout(600)


def iterative_config(out, *overrides):
    return load_config(None, [
        "model.path=builtin:multistep", "data.task=multistep", "data.eval_limit=8", "rollout.group_size=4",
        "rollout.prompts_per_step=3", "rollout.max_new_tokens=40", "optim.lr=1e-4", "algorithm.beta=0.04",
        "algorithm.advantage=process", "iterative.iterations=2", "iterative.steps_per_iteration=2",
        "iterative.rm_samples=16", "iterative.mc_rollouts=2", "iterative.rm_epochs=1", "train.save_every=1",
        "train.keep_checkpoints=10", "train.eval_samples=2", "train.threads=1", f"train.out_dir={out}",
        "log.console=quiet", "log.completions_every=0", *overrides,
    ])


def metric_lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def comparable(metrics):
    return [{k: v for k, v in m.items() if not k.startswith("time/") and k != "tokens_per_s"} for m in metrics]


@pytest.mark.parametrize("labels", ["monte_carlo", "gold"])
def test_process_supervision_with_a_prm_retrained_every_iteration(tmp_path, labels):
    out = tmp_path / "run"
    summary = Trainer(iterative_config(out, f"iterative.labels={labels}"), RunConsole("quiet", 4)).train()
    assert summary["steps"] == 4
    metrics = metric_lines(out)
    assert [m["iteration"] for m in metrics] == [1, 1, 2, 2]
    assert metrics[1]["rm/held_out_accuracy"] is not None and "rm/examples" in metrics[1]
    for k in (0, 1):  # iteration 0 trained the starting PRM; iteration 1 retrained it on the policy's samples
        report = json.loads((out / "iterations" / f"iter-{k}" / "reward_model" / "training.json").read_text())
        assert report["kind"] == "process" and report["init_mode"] == ("new_head" if k == 0 else "continued")
        assert (out / "iterations" / f"iter-{k}" / "data.jsonl").read_text().strip()
    assert not (out / "iterations" / "iter-2").exists()  # the last iteration trains no further model
    mixture = json.loads((out / "iterations" / "iter-1" / "reward_model" / "training.json").read_text())
    fresh = len((out / "iterations" / "iter-1" / "data.jsonl").read_text().splitlines())
    assert mixture["train_examples"] + mixture["held_out_examples"] > fresh  # the replay share came in
    assert "reference model reset" in (out / "run.log").read_text()
    html = write_report(out).read_text()
    assert 'id="iterations-table"' in html


def test_outcome_supervision_with_an_orm_retrained_on_rule_labels(tmp_path):
    out = tmp_path / "run"
    config = iterative_config(out, "algorithm.advantage=group_norm", "iterative.supervision=outcome", "iterative.labels=rule",
                              "reward.functions=[{name: final_answer, weight: 0.0}]")
    Trainer(config, RunConsole("quiet", 4)).train()
    metrics = metric_lines(out)
    assert all("reward/reward_model/mean" in m and "accuracy" in m for m in metrics)
    report = json.loads((out / "iterations" / "iter-1" / "reward_model" / "training.json").read_text())
    assert report["kind"] == "outcome" and report["init_mode"] == "continued"


def test_a_run_killed_mid_iteration_resumes_exactly(tmp_path):
    straight = tmp_path / "straight"
    Trainer(iterative_config(straight, "train.eval_before=false", "train.eval_after=false"), RunConsole("quiet", 4)).train()
    crashed = tmp_path / "crashed"
    shutil.copytree(straight, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step-4")  # killed during step 4 (iteration 2): checkpoints up to step 3
    shutil.rmtree(crashed / "final")
    resumed = Trainer(iterative_config(crashed, "train.eval_before=false", "train.eval_after=false", "train.resume=true"),
                      RunConsole("quiet", 4))
    assert resumed.step == 3 and resumed.iterative.iteration == 2
    resumed.train()
    assert comparable(metric_lines(crashed)) == comparable(metric_lines(straight))
    a, b = load_file(straight / "final" / "model.safetensors"), load_file(crashed / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algorithm.advantage=group_norm"], "algorithm.advantage='group_norm' is not allowed: expected process exactly when iterative.supervision=process"),
        (["train.steps=9"], "train.steps=9 is not allowed: expected iterative.iterations x iterative.steps_per_iteration = 4"),
        (["iterative.labels=rule"], "iterative.labels='rule' is not allowed: expected one of monte_carlo, gold with iterative.supervision=process"),
        (["iterative.replay_fraction=1.0"], "iterative.replay_fraction=1.0 is not allowed: expected a fraction in"),
    ],
)
def test_iterative_settings_are_checked(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(")", "\\)")):
        iterative_config(tmp_path, *overrides)


def test_iterative_belongs_to_grpo(tmp_path):
    with pytest.raises(ConfigError, match="iterative.iterations belongs to method grpo, not dpo"):
        check_config(load_config(None, ["model.path=m", "algorithm.method=dpo", "iterative.iterations=2",
                                        "iterative.steps_per_iteration=1", "iterative.supervision=outcome",
                                        "iterative.labels=rule"]))
