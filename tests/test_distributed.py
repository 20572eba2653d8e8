"""torchrun for real: 2 CPU processes (gloo) against 1 process on the same global batch and seeds.

Each 2-rank run is a real ``python -m torch.distributed.run --nproc_per_node=2 -m cohort train ...``;
a one-process run goes through the same CLI entry point in the test's own process.
Weights after several steps agree within 1e-5 with DDP and with FSDP2 (sharded update: padded
micro-batches, activation checkpointing), for GRPO, DPO and PPO (its value model too); a run resumes under another world size and strategy; a run whose rank dies
resumes from its last checkpoint to exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cohort.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TESTS = Path(__file__).parent
METHODS = {
    "grpo": ["algorithm.beta=0.04", "algorithm.mu=2"],
    "dpo": ["algorithm.method=dpo", "offline.samples_per_prompt=4", "offline.max_prompts=12", "train.batch_size=4"],
    "ppo": ["algorithm.method=ppo", "algorithm.beta=0.04", "algorithm.mu=2"],
}


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(6) for b in range(6)))
    return path


def launch(ranks: int, model_dir, task_file, out, *overrides, steps: int = 3, reward: str | None = None, exit_dir=None):
    """``cohort train`` in this process (``ranks`` 1) or under torchrun with ``ranks`` processes
    (``exit_dir``: where each rank notes that its atexit handlers ran, see reward_fixtures)."""
    reward = reward or "{name: 'reward_fixtures:has_digit'}, {name: 'reward_fixtures:digit_count', weight: 0.1}"
    args = [
        f"model.path={model_dir}", f"data.task={task_file}", "rollout.group_size=4", "rollout.prompts_per_step=4",
        "rollout.max_new_tokens=4", "optim.lr=1e-4", "optim.micro_batch_size=3", f"train.steps={steps}", "train.save_every=2",
        "train.eval_before=false", "train.eval_after=false", f"train.out_dir={out}", "log.console=plain", "log.report=false",
        "train.threads=1", f"reward.functions=[{reward}]", *overrides,
    ]
    if ranks == 1:
        return in_this_process(["train", *args])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m", "cohort"]
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1",
           **({"COHORT_TEST_EXIT_DIR": str(exit_dir)} if exit_dir else {})}
    return subprocess.run([*launcher, "train", *args], capture_output=True, text=True, timeout=300, env=env)


def in_this_process(argv: list[str]) -> subprocess.CompletedProcess:
    """``cohort <argv>`` through the CLI's main in this (already warm) process: a one-process run
    needs no process of its own, and that saves ~4 s of imports per run."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return subprocess.CompletedProcess(["cohort", *argv], code, stdout.getvalue(), stderr.getvalue())


def largest_difference(a: Path, b: Path, part: str = "final/model.safetensors") -> float:
    x, y = load_file(a / part), load_file(b / part)
    assert sorted(x) == sorted(y)
    return max(float((x[k] - y[k]).abs().max()) for k in x)


@pytest.fixture(scope="module")
def reference_runs(tiny_llama_dir, task_file, tmp_path_factory):
    """The runs several tests compare against, made once: ``run(method)`` is the one-process run,
    ``run(method, strategy)`` the 2-rank one; each returns its run directory (``run``, in a directory
    of its own where the ranks' exit markers land) and its CompletedProcess."""
    runs = {}

    def run(method: str, strategy: str | None = None) -> tuple[Path, subprocess.CompletedProcess]:
        if (method, strategy) not in runs:
            root = tmp_path_factory.mktemp(f"{method}-{strategy or 'one-process'}")
            ranks, overrides = (1, []) if strategy is None else (2, [f"distributed.strategy={strategy}"])
            result = launch(ranks, tiny_llama_dir, task_file, root / "run", *METHODS[method], *overrides, exit_dir=root)
            runs[method, strategy] = root / "run", result
        return runs[method, strategy]

    return run


def one_process(reference_runs, method: str) -> Path:
    out, result = reference_runs(method)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


REFERENCE_RUNS = pytest.mark.shares("reference-runs")  # one worker makes the reference_runs (tests/xdist_order.py)


@pytest.mark.slow(seconds=15)
@REFERENCE_RUNS
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_ranks_train_the_weights_one_process_trains(reference_runs, method, strategy):
    out, result = reference_runs(method, strategy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained 3 steps") == 1  # only rank 0 prints
    # each rank ended with os._exit (distributed.leave_process), after its atexit handlers ran
    assert sorted(p.name for p in out.parent.glob("exit-rank-*")) == ["exit-rank-0", "exit-rank-1"]
    reference = one_process(reference_runs, method)
    assert largest_difference(reference, out) < 1e-5
    if method == "ppo":
        assert largest_difference(reference, out, "checkpoints/step-3/value_model/model.safetensors") < 1e-5
    one = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(one, two):  # rewards are those of the same samples
        assert a.get("reward/mean") == pytest.approx(b.get("reward/mean"), abs=1e-9) if "reward/mean" in a else True
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]


@pytest.mark.slow(seconds=17)
def test_fsdp2_pads_uneven_micro_batches_and_checkpoints_activations(tmp_path, tiny_llama_dir, task_file):
    """One row per micro-batch: the ranks run different numbers of them (GRPO skips zero-advantage
    groups), so the sharded update pads the shorter rank with zero-weighted ones; activation
    checkpointing recomputes each layer (gathering it again) in the backward. Same weights as one process."""
    overrides = [*METHODS["grpo"], "optim.micro_batch_size=1", "model.gradient_checkpointing=true"]
    one = launch(1, tiny_llama_dir, task_file, tmp_path / "one", *overrides)
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(2, tiny_llama_dir, task_file, tmp_path / "two", *overrides, "distributed.strategy=fsdp2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert largest_difference(tmp_path / "one", tmp_path / "two") < 1e-5


@pytest.mark.slow(seconds=12)
def test_fsdp2_mixed_precision_trains_and_keeps_fp32_shards(tmp_path, tiny_llama_dir, task_file):
    """(distributed.cpu_offload=true on CPU stops in the checks before any weights load: test_user_mistakes.py.)"""
    bf16 = launch(2, tiny_llama_dir, task_file, tmp_path / "bf16", *METHODS["grpo"], "distributed.strategy=fsdp2",
                  "distributed.mixed_precision=bf16", steps=2)
    assert bf16.returncode == 0, bf16.stderr[-3000:]
    assert all(w.dtype == torch.float32 for w in load_file(tmp_path / "bf16" / "final" / "model.safetensors").values())  # fp32 shards


@pytest.mark.slow(seconds=16)
@REFERENCE_RUNS
def test_a_run_resumes_under_another_world_size_and_strategy(tmp_path, tiny_llama_dir, task_file, reference_runs):
    """2 FSDP2 ranks stop at step 2 (checkpointed); one process resumes and finishes step 3: the
    weights of the 3-step one-process run."""
    moved = tmp_path / "moved"
    first = launch(2, tiny_llama_dir, task_file, moved, *METHODS["grpo"], "distributed.strategy=fsdp2", steps=2)
    assert first.returncode == 0, first.stderr[-3000:]
    second = launch(1, tiny_llama_dir, task_file, moved, *METHODS["grpo"], "train.resume=true", steps=3)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "at step 2" in next(line for line in (second.stdout + second.stderr).splitlines() if "resumed from" in line)
    assert largest_difference(one_process(reference_runs, "grpo"), moved) < 1e-5


@pytest.mark.slow(seconds=20)
@REFERENCE_RUNS
def test_a_rank_that_dies_loses_only_the_steps_since_the_last_checkpoint(tmp_path, tiny_llama_dir, task_file, reference_runs):
    """Rank 1 is killed during step 3 (after the step-2 checkpoint); the resumed run ends with
    exactly the weights of the uninterrupted 2-rank run (the same rewards: SignalAtCall scores as has_digit)."""
    crashed = tmp_path / "crashed"
    killer = "{name: 'reward_fixtures:SignalAtCall', at: 3, signal: SIGKILL, rank: 1}, {name: 'reward_fixtures:digit_count', weight: 0.1}"
    result = launch(2, tiny_llama_dir, task_file, crashed, *METHODS["grpo"], "distributed.strategy=ddp", reward=killer)
    assert result.returncode != 0
    assert sorted(p.name for p in (crashed / "checkpoints").iterdir()) == ["step-2"]
    resumed = launch(2, tiny_llama_dir, task_file, crashed, *METHODS["grpo"], "distributed.strategy=ddp", "train.resume=true",
                     "train.accept_changes=true",
                     reward="{name: 'reward_fixtures:SignalAtCall', at: 99}, {name: 'reward_fixtures:digit_count', weight: 0.1}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight, uninterrupted = reference_runs("grpo", "ddp")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    a, b = load_file(straight / "final" / "model.safetensors"), load_file(crashed / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
