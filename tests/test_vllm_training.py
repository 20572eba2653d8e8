"""vLLM as the rollout engine (rollout.engine=vllm) from the command line: every online method
trains with it, torchrun ranks (FSDP2) sample one process's batch, ``cohort eval`` gives the native
engine's greedy accuracy, and a model vLLM's CPU build cannot run is named before anything loads.
These tests run where vLLM is installed (.venv-vllm: make vllm; make test runs them there) and skip
elsewhere. The engine itself: tests/test_vllm_engine.py.
"""

from __future__ import annotations

import json

import pytest

from cohort.assets import resolve_builtin
from cohort.rollout.vllm_engine import INSTALL_HINT, vllm_available

pytestmark = pytest.mark.vllm
if not vllm_available():
    pytest.skip(f"{INSTALL_HINT} (make test runs these tests there)", allow_module_level=True)


def demo_run(out_dir, method, *overrides):
    from cohort.cli import main

    common = [f"train.out_dir={out_dir}", "log.console=quiet", "log.report=false", "rollout.engine=vllm",
              "rollout.vllm_memory_fraction=0.02", f"algorithm.method={method}", "data.eval_limit=40",
              "train.eval_samples=2", "train.save_every=0"]
    assert main(["train", "builtin:demo", *common, *overrides]) == 0
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method, overrides", [
    ("grpo", ["algorithm.tis_cap=2.0", "algorithm.beta=0.04"]),
    ("ppo", ["algorithm.beta=0.04"]),
    ("online_rft", []),
    ("rft", ["offline.samples_per_prompt=4", "offline.max_prompts=16"]),
    ("dpo", ["offline.samples_per_prompt=4", "offline.max_prompts=16"]),
    ("grpo", ["model.lora={r: 4, alpha: 16}", "optim.lr=1e-2"]),  # the adapters merged into every copy
], ids=["grpo", "ppo", "online_rft", "rft", "dpo", "grpo-lora"])
def test_every_online_method_trains_with_the_vllm_engine_from_the_cli(tmp_path, method, overrides):
    metrics = demo_run(tmp_path / method, method, "train.steps=3", *overrides)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    if method in ("grpo", "ppo"):  # they recompute pi_old: a stale copy would show here as a large gap
        gaps = [m["rollout/logprob_diff_max"] for m in metrics]
        assert all(0 <= gap < 1e-3 for gap in gaps), gaps
    if "algorithm.tis_cap=2.0" in overrides:
        assert all(0.5 < m["rollout/tis_weight_mean"] < 1.5 for m in metrics)
    assert (tmp_path / method / "eval_after.json").is_file()


def launch(ranks, out, *overrides):
    """``cohort train`` on the demo model with the vLLM engine, in one process or under torchrun."""
    import os
    import subprocess
    import sys

    task = out.parent / "sums.jsonl"
    task.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(10) for b in range(10)))
    args = [f"model.path={resolve_builtin('builtin:demo')}", f"data.task={task}", "data.test_fraction=0.1", "data.eval_limit=8",
            "rollout.group_size=4", "rollout.prompts_per_step=4", "rollout.max_new_tokens=4", "optim.lr=1e-3", "train.steps=3",
            "train.eval_before=false", "train.eval_samples=2", f"train.out_dir={out}", "log.console=plain", "log.report=false",
            "train.threads=1", "rollout.engine=vllm", "rollout.vllm_memory_fraction=0.02", "algorithm.beta=0.04", *overrides]
    launcher = [sys.executable, "-m", "cohort"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m", "cohort"]
    return subprocess.run([*launcher, "train", *args], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_under_torchrun_every_ranks_engine_samples_its_share_of_one_batch(tmp_path):
    """2 ranks (FSDP2: the copy gathers the shards; rank 0 alone evaluates after training) sample the
    batch one process samples (the same rewards at every step) and train the same weights."""
    from safetensors.torch import load_file

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = launch(1, tmp_path / "one" / "run")
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(2, tmp_path / "two" / "run", "distributed.strategy=fsdp2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Traceback" not in two.stderr, two.stderr[-3000:]
    rewards = [[json.loads(line)["reward/mean"] for line in (tmp_path / run / "run" / "metrics.jsonl").read_text().splitlines()]
               for run in ("one", "two")]
    assert rewards[0] == pytest.approx(rewards[1], abs=1e-9)
    a, b = (load_file(tmp_path / run / "run" / "final" / "model.safetensors") for run in ("one", "two"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 2e-4  # lr 1e-3: reduction order only
    assert (tmp_path / "two" / "run" / "eval_after.json").is_file()


def test_a_model_vllms_cpu_build_cannot_run_is_named_before_anything_loads(tmp_path, capsys):
    from cohort.cli import main

    assert main(["train", "builtin:demo", "model.path=builtin:multistep", "rollout.engine=vllm", "data.task=multistep",
                 f"train.out_dir={tmp_path}", "log.console=quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "has attention heads of size 24; vLLM's CPU build supports 32" in error[0], error


def test_cohort_eval_with_vllm_gives_the_native_greedy_accuracy(tmp_path):
    from cohort.cli import main

    summaries = {}
    for engine in ("native", "vllm"):
        out = tmp_path / engine
        assert main(["eval", "builtin:demo", f"rollout.engine={engine}", "rollout.vllm_memory_fraction=0.02",
                     "--limit", "80", "--samples", "2", "--out", str(out)]) == 0
        summaries[engine] = json.loads((out / "summary.json").read_text())["models"][0]["summary"]
    assert summaries["vllm"]["greedy_accuracy"] == summaries["native"]["greedy_accuracy"]  # the same greedy answers
    assert abs(summaries["vllm"]["pass_at_k"]["1"] - summaries["native"]["pass_at_k"]["1"]) < 0.2  # other random numbers
