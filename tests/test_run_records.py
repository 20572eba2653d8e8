"""A run's own record stays true: evaluations name the weights they measured, a resume never mixes
settings silently, every segment's config is kept, an overwrite says what it deletes, and the
closing line says what this invocation did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_trainer import run_config, task_file  # noqa: F401  (task_file is a fixture)

from cohort.cli import main
from cohort.config import ConfigError, load_config
from cohort.monitoring.console import RunConsole
from cohort.training.trainer import Trainer


def train(config):
    return Trainer(config, RunConsole("quiet", config.train.steps)).train()


def evaluated(config_args):
    return [*config_args, "train.eval_before=true", "train.eval_after=true", "train.eval_samples=2"]


def test_extending_a_finished_run_evaluates_the_new_final_model(tmp_path, tiny_llama_dir, task_file):  # noqa: F811
    out = tmp_path / "run"
    first = train(run_config(out, tiny_llama_dir, task_file, "train.steps=2", "optim.lr=1e-2"))
    measured = json.loads((out / "eval_after.json").read_text())["extra"]["checkpoint"]
    assert measured["step"] == 2 and len(measured["weights_sha256"]) == 64
    again = train(run_config(out, tiny_llama_dir, task_file, "train.steps=4", "optim.lr=1e-2", "train.resume=true"))
    remeasured = json.loads((out / "eval_after.json").read_text())["extra"]["checkpoint"]
    assert remeasured["step"] == 4 and remeasured["weights_sha256"] != measured["weights_sha256"]
    assert again["after"] != first["after"] or again["after"]["extra"] != first["after"]["extra"]
    before = json.loads((out / "eval_before.json").read_text())["extra"]["checkpoint"]
    assert before == {"step": 0, "model": str(tiny_llama_dir)}  # the initial model's evaluation is kept


def test_a_resume_with_another_learning_rate_is_refused_with_the_diff(tmp_path, tiny_llama_dir, task_file):  # noqa: F811
    out = tmp_path / "run"
    train(run_config(out, tiny_llama_dir, task_file, "train.steps=2", "train.save_every=1"))
    config = run_config(out, tiny_llama_dir, task_file, "train.steps=4", "train.resume=true", "optim.lr=5e-3")
    with pytest.raises(ConfigError, match=r"train.resume=true with a changed config \(optim.lr: 0.001 -> 0.005\).*"
                                          r"train.accept_changes=true to apply them from step 2"):
        Trainer(config, RunConsole("quiet", 4))
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 1e-3  # the record is untouched


def test_accepted_changes_apply_from_the_resumed_step_and_each_segment_keeps_its_config(tmp_path, tiny_llama_dir, task_file):  # noqa: F811
    out = tmp_path / "run"
    train(run_config(out, tiny_llama_dir, task_file, "train.steps=2"))
    train(run_config(out, tiny_llama_dir, task_file, "train.steps=4", "train.resume=true", "optim.lr=5e-3",
                     "optim.weight_decay=0.1", "train.accept_changes=true"))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["lr"] for m in metrics] == pytest.approx([1e-3, 1e-3, 5e-3, 5e-3])
    assert sorted(p.name for p in (out / "configs").iterdir()) == ["step-0.yaml", "step-2.yaml"]
    assert yaml.safe_load((out / "configs" / "step-0.yaml").read_text())["optim"]["lr"] == 1e-3
    assert yaml.safe_load((out / "configs" / "step-2.yaml").read_text())["optim"]["weight_decay"] == 0.1
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 5e-3


def test_run_length_and_logging_may_change_on_resume(tmp_path, tiny_llama_dir, task_file):  # noqa: F811
    out = tmp_path / "run"
    train(run_config(out, tiny_llama_dir, task_file, "train.steps=2"))
    summary = train(run_config(out, tiny_llama_dir, task_file, "train.steps=3", "train.resume=true", "log.completions_every=0",
                               "train.save_every=7", "train.eval_after=true"))
    assert summary["steps"] == 3 and summary["steps_this_run"] == 1


def test_overwrite_says_what_it_deletes(tmp_path, tiny_llama_dir, task_file, capsys):  # noqa: F811
    out = tmp_path / "run"
    args = ["train", *[a for a in run_config_args(out, tiny_llama_dir, task_file)], "log.console=plain"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "train.overwrite=true"]) == 0
    err = capsys.readouterr().err
    assert f"train.overwrite=true: deleting the run in {out} (checkpoints/, final/, configs/, " in err
    assert "metrics.jsonl" in err


def run_config_args(out, model_dir, task):
    config = run_config(out, model_dir, task)
    flat = {f"{section}.{key}": value for section, values in config.to_dict().items() for key, value in values.items()}
    keep = ("model.path", "data.task", "data.test_fraction", "data.eval_limit", "rollout.group_size", "rollout.prompts_per_step",
            "rollout.max_new_tokens", "algorithm.beta", "optim.lr", "optim.micro_batch_size", "train.steps", "train.out_dir",
            "train.eval_before", "train.eval_after", "log.report")
    args = [f"{key}={json.dumps(flat[key]) if not isinstance(flat[key], str) else flat[key]}" for key in keep]
    return [*args, f"reward.functions={json.dumps(config.reward.functions)}"]


def test_resuming_a_finished_run_says_there_is_nothing_to_train(tmp_path, tiny_llama_dir, task_file, capsys):  # noqa: F811
    out = tmp_path / "run"
    args = ["train", *run_config_args(out, tiny_llama_dir, task_file), "log.console=plain"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "train.resume=true"]) == 0
    out_text = capsys.readouterr().out
    assert "nothing to train: the run is at step 3 of train.steps=3" in out_text and "nan" not in out_text


def test_most_completions_cut_off_warns_once_with_the_key_to_raise(tmp_path, tiny_llama_dir, task_file, capsys):  # noqa: F811
    train(run_config(tmp_path / "run", tiny_llama_dir, task_file, "rollout.max_new_tokens=1", "train.steps=4"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "were cut off" in line]
    assert len(warnings) == 1 and "raise rollout.max_new_tokens" in warnings[0] and "rollout.max_new_tokens=1" in warnings[0]


def test_ctrl_c_during_offline_sampling_keeps_what_was_drawn_and_the_same_command_continues(tmp_path, tiny_llama_dir, task_file):  # noqa: F811
    """A real SIGINT, sent by the reward while the second chunk of offline samples is scored."""
    out = tmp_path / "run"
    task = task_file

    def cohort(reward):
        args = [sys.executable, "-m", "cohort.cli", "train", f"model.path={tiny_llama_dir}", f"data.task={task}",
                "algorithm.method=rft", "rollout.group_size=2", "rollout.prompts_per_step=4", "rollout.max_new_tokens=3",
                "offline.samples_per_prompt=2", "train.steps=2", f"train.out_dir={out}", "train.eval_before=false",
                "train.eval_after=false", "log.report=false", "log.console=plain", "train.threads=1",
                f"reward.functions=[{reward}]"]
        env = {**os.environ, "PYTHONPATH": f"{Path(__file__).parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)

    stopped = cohort("{name: 'reward_fixtures:SignalAtCall', at: 2, signal: SIGINT}")
    assert stopped.returncode == 130, stopped.stderr
    assert "offline samples of the initial policy: 36 prompts x 2 = 72 completions" in stopped.stderr
    assert "stopped while drawing offline samples, after 8/36 prompts" in stopped.stderr
    assert json.loads((out / "offline" / "meta.json").read_text())["chunks_done"] == 2
    assert len((out / "offline" / "samples.jsonl").read_text().splitlines()) == 8 * 2
    assert not (out / "checkpoints").exists()
    again = cohort("{name: 'reward_fixtures:SignalAtCall', at: 99, signal: SIGINT}")  # the same run, no signal this time
    assert again.returncode == 0, again.stderr
    assert "72 completions, 8 already drawn" in again.stderr
    assert len((out / "offline" / "samples.jsonl").read_text().splitlines()) == 72
