"""Every reward source, configured from YAML, trains a few steps end to end."""

from __future__ import annotations

import json

import pytest
import yaml
from rewards.test_reward_models import save_classifier
from system_deps import requires_bubblewrap
from transformers import LlamaForSequenceClassification, LlamaForTokenClassification

from cohort.config import load_config
from cohort.monitoring.console import RunConsole
from cohort.training.trainer import Trainer


def write_yaml(path, tree):
    path.write_text(yaml.safe_dump(tree))
    return path


def base_tree(model_dir, task, out):
    return {
        "model": {"path": str(model_dir)},
        "data": {"task": str(task)},
        "rollout": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 6},
        "algorithm": {"beta": 0.0},
        "optim": {"lr": 1e-3},
        "train": {"steps": 2, "out_dir": str(out), "eval_before": False, "eval_after": False, "save_every": 0},
        "log": {"console": "quiet", "report": False},
    }


def run(tree, tmp_path):
    config = load_config(write_yaml(tmp_path / "run.yaml", tree))
    Trainer(config, RunConsole("quiet", config.train.steps)).train()
    return [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def sums_task(tmp_path):
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(4) for b in range(4)))
    return path


def test_reward_model_from_yaml(tmp_path, tiny_llama_dir, sums_task):
    rm_dir, _, _ = save_classifier(tmp_path / "rm", LlamaForSequenceClassification, 1)
    tree = base_tree(tiny_llama_dir, sums_task, tmp_path / "out")
    tree["reward"] = {"functions": [{"name": "reward_model", "path": str(rm_dir), "batch_size": 4}]}
    metrics = run(tree, tmp_path)
    assert len(metrics) == 2
    assert all(m["reward/std"] > 0 for m in metrics)  # a real model gives graded scores
    assert all(m["trained_frac"] > 0 for m in metrics)


def test_process_reward_model_drives_process_supervision(tmp_path, tiny_llama_dir, sums_task):
    prm_dir, _, _ = save_classifier(tmp_path / "prm", LlamaForTokenClassification, 2)
    tree = base_tree(tiny_llama_dir, sums_task, tmp_path / "out")
    tree["algorithm"]["advantage"] = "process"
    tree["reward"] = {
        "functions": [{"name": "exact_match"}],
        "process_model": {"path": str(prm_dir), "step_marker": " ", "separator": "\n"},
    }
    tree["rollout"]["max_new_tokens"] = 12
    metrics = run(tree, tmp_path)
    assert len(metrics) == 2
    assert any(m["trained_frac"] > 0 for m in metrics)
    assert all(m["advantage/abs_mean"] >= 0 for m in metrics)
    assert all(0 <= m["process/step_score_mean"] <= 1 and m["process/steps_mean"] >= 1 for m in metrics)  # 2-label PRM: probabilities


def test_process_advantage_without_a_prm_is_a_config_error(tmp_path, tiny_llama_dir, sums_task):
    tree = base_tree(tiny_llama_dir, sums_task, tmp_path / "out")
    tree["algorithm"]["advantage"] = "process"
    with pytest.raises(ValueError, match="reward.process_model=None is not allowed"):
        load_config(write_yaml(tmp_path / "run.yaml", tree))


@requires_bubblewrap  # the code reward refuses to run programs without it
def test_code_reward_from_yaml(tmp_path, tiny_llama_dir):
    task = tmp_path / "code.jsonl"
    rows = [
        {"prompt": "Write f(x) returning x+1.", "answer": "-", "tests": json.dumps(["assert f(1) == 2"])},
        {"prompt": "Read n, print 2n.", "answer": "-", "tests": [{"input": "3\n", "output": "6\n"}]},
    ]
    task.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tree = base_tree(tiny_llama_dir, task, tmp_path / "out")
    tree["reward"] = {"functions": [{"name": "code", "mode": "fraction", "timeout_s": 2}], "timeout_s": 120}
    metrics = run(tree, tmp_path)
    assert len(metrics) == 2
    for m in metrics:
        assert m["reward/code/mean"] == 0.0  # random text is no program: scored 0, not None
        assert m["reward/none_frac"] == 0.0 and m["reward/failures"] == 0


@requires_bubblewrap
def test_the_run_log_names_the_sandbox_isolation(tmp_path, tiny_llama_dir):
    task = tmp_path / "code.jsonl"
    task.write_text(json.dumps({"prompt": "Print 1.", "answer": "-", "tests": [{"input": "", "output": "1\n"}]}) + "\n")
    tree = base_tree(tiny_llama_dir, task, tmp_path / "out")
    tree["train"]["steps"] = 1
    tree["reward"] = {"functions": [{"name": "code"}], "timeout_s": 120}
    run(tree, tmp_path)
    log = (tmp_path / "out" / "run.log").read_text()
    assert "programs run in a sandbox with" in log
    from cohort.rewards.sandbox.runner import sandbox_isolation

    assert sandbox_isolation().split(" ")[0] in log


def test_math_reward_on_gsm8k_format_from_yaml(tmp_path, tiny_llama_dir):
    from cohort.data.samples import write_sample_math_files

    files = write_sample_math_files(tmp_path / "data")
    tree = base_tree(tiny_llama_dir, files["gsm8k"], tmp_path / "out")
    tree["data"].update({"format": "gsm8k", "test_fraction": 0.2, "eval_limit": 3})
    tree["train"].update({"eval_after": True, "eval_samples": 2})
    tree["reward"] = {"functions": [{"name": "math", "extract": ["boxed", "last_number"]}]}
    metrics = run(tree, tmp_path)
    assert len(metrics) == 2 and all("reward/math/mean" in m and "accuracy" in m for m in metrics)
    after = json.loads((tmp_path / "out" / "eval_after.json").read_text())
    assert after["num_problems"] == 3


def test_a_gsm8k_file_defaults_to_the_math_reward(tmp_path):
    from cohort.data.samples import write_sample_math_files
    from cohort.data.tasks import load_task

    files = write_sample_math_files(tmp_path)
    task = load_task(str(files["math"]), data_format="math", test_fraction=0.2)
    assert task.default_rewards[0]["name"] == "math"
    assert {"prompt", "answer"} <= set(task.train.column_names)
