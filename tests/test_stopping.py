"""A stop loses nothing and a shared checkpoint cannot run code.

Real processes: ``cohort train`` receives SIGTERM / SIGINT from inside a step (a reward function
sends it, as a scheduler's preemption would arrive), finishes that step, checkpoints it, exits with
128 + the signal; resuming gives exactly the uninterrupted run. A second signal exits at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from built_once import built_once
from safetensors.torch import load_file

from cohort.config import load_config
from cohort.monitoring.console import RunConsole
from cohort.run_directory import TRAINER_STATE
from cohort.training.checkpoint import UnsafeCheckpointError, load_trainer_state
from cohort.training.trainer import Trainer

TESTS = Path(__file__).parent


def run_cli(model_dir, task_file, out, *overrides, reward="{name: 'reward_fixtures:SignalAtCall', at: 99}"):
    args = [
        sys.executable, "-m", "cohort.cli", "train", f"model.path={model_dir}", f"data.task={task_file}",
        "rollout.group_size=4", "rollout.prompts_per_step=3", "rollout.max_new_tokens=4", "algorithm.beta=0.04",
        "optim.lr=1e-3", "train.steps=5", "train.save_every=2", "train.eval_before=false", "train.eval_after=false",
        f"train.out_dir={out}", "log.console=plain", "log.report=false", "train.threads=1", f"reward.functions=[{reward}]",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(6) for b in range(6)))
    return path


def steps_in(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def comparable(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if not k.startswith("time/") and k != "tokens_per_s"} for m in lines]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, worker_id, tiny_llama_dir, task_file) -> Path:
    """An uninterrupted run of the same config (read-only; shared by the signal tests of every worker:
    the tiny model and the task are built alike on each)."""
    def run(directory: Path) -> int:
        result = run_cli(tiny_llama_dir, task_file, directory / "run")
        assert result.returncode == 0, result.stderr[-3000:]
        return result.returncode

    directory, _ = built_once(tmp_path_factory, worker_id, "stopping-straight", run)
    return directory / "run"


@pytest.mark.slow(seconds=17)
@pytest.mark.shares("stopping-straight")  # run first, back to back, on one worker (tests/xdist_order.py)
@pytest.mark.parametrize("signal_name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_finishes_the_step_checkpoints_it_and_resume_is_exact(tmp_path, tiny_llama_dir, task_file, straight, signal_name, code):
    stopped = tmp_path / "stopped"
    result = run_cli(tiny_llama_dir, task_file, stopped, reward=f"{{name: 'reward_fixtures:SignalAtCall', at: 3, signal: {signal_name}}}")
    assert result.returncode == code, result.stderr
    assert f"{signal_name} received: finishing this step" in result.stderr
    assert "stopped early by a signal after 3 steps" in result.stdout
    assert steps_in(stopped) == [1, 2, 3]  # the third step, during which the signal came, was finished
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["step-2", "step-3"]
    assert not (stopped / "final").exists()
    assert run_cli(tiny_llama_dir, task_file, stopped, "train.resume=true", "train.accept_changes=true").returncode == 0  # the signal trigger changed
    assert comparable(stopped) == comparable(straight)
    a, b = load_file(straight / "final" / "model.safetensors"), load_file(stopped / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_second_signal_exits_at_once_and_leaves_only_complete_checkpoints(tmp_path, tiny_llama_dir, task_file):
    out = tmp_path / "run"
    result = run_cli(tiny_llama_dir, task_file, out, reward="{name: 'reward_fixtures:SignalAtCall', at: 3, signal: SIGINT, count: 2}")
    assert result.returncode == 130, result.stderr
    assert "cohort: interrupted" in result.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2"]  # step 3 was abandoned
    assert load_trainer_state(out / "checkpoints" / "step-2")["step"] == 2
    assert run_cli(tiny_llama_dir, task_file, out, "train.resume=true", "train.accept_changes=true").returncode == 0  # the signal trigger changed
    assert steps_in(out) == [1, 2, 3, 4, 5]


class _Payload:
    """Unpickling this would create a file: what a malicious shared checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_unpickles_code_from_a_checkpoint(tmp_path, tiny_llama_dir, task_file):
    out = tmp_path / "run"
    base = [f"model.path={tiny_llama_dir}", f"data.task={task_file}", "rollout.group_size=2", "rollout.max_new_tokens=3",
            "train.steps=1", "train.eval_before=false", "train.eval_after=false", f"train.out_dir={out}",
            "log.console=quiet", "log.report=false"]
    config = load_config(None, base)
    Trainer(config, RunConsole("quiet", 1)).train()
    state_path = out / "checkpoints" / "step-1" / TRAINER_STATE
    assert load_trainer_state(state_path.parent)["step"] == 1  # a genuine checkpoint loads weights-only
    marker = tmp_path / "pwned"
    state = torch.load(state_path, weights_only=True)
    state["note"] = _Payload(marker)
    torch.save(state, state_path)
    with pytest.raises(UnsafeCheckpointError, match="holds more than tensors and plain values, so it is not loaded"):
        Trainer(load_config(None, base + ["train.steps=2", "train.resume=true"]), RunConsole("quiet", 2))
    assert not marker.exists()
