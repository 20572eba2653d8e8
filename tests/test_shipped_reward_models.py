"""The multi-step task's shipped reward models: they load, score steps with probabilities, record
the held-out numbers the quality gate reads, and their build script is deterministic."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from cohort.assets import BUILTIN_MODELS, resolve_builtin
from cohort.models.loading import load_tokenizer
from cohort.reproduce.plan import FULL
from cohort.rewards import build_reward
from cohort.rewards.gate import recorded_within_group_auc
from cohort.rewards.process_model import ProcessRewardModel

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_reward_models.py"
PROMPT, GOLD, WRONG = "12+7-5+30=", "12+7=19\n19-5=14\n14+30=44", "12+7=19\n19-5=15\n15+30=45"


@pytest.mark.parametrize("name", ["multistep_prm", "multistep_orm"])
def test_the_shipped_models_record_what_the_gate_reads(name):
    report = json.loads((BUILTIN_MODELS[name] / "training.json").read_text())
    auc = recorded_within_group_auc(f"builtin:{name}")
    assert auc == report["held_out"]["within_group_auc"] and FULL.rm_gate < auc < 1
    assert report["held_out_before"]["within_group_auc"] < auc  # training helped
    assert "seconds" not in report and "out_dir" not in report  # nothing that differs between rebuilds
    assert f"{auc:.3f}" in (BUILTIN_MODELS[name] / "README.md").read_text()


def test_the_shipped_prm_scores_steps_with_probabilities():
    tokenizer = load_tokenizer(resolve_builtin("builtin:multistep"))
    prm = ProcessRewardModel("builtin:multistep_prm", tokenizer, device="cpu")
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (GOLD, WRONG)]
    gold, wrong = prm([PROMPT, PROMPT], [GOLD, WRONG], ids)
    assert len(gold.rewards) == 3 and all(0.0 < r < 1.0 for r in gold.rewards + wrong.rewards)
    orm = build_reward({"name": "reward_model", "path": "builtin:multistep_orm"})
    assert len(orm.fn([PROMPT, PROMPT], [GOLD, WRONG])) == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_build_script_writes_the_same_bytes_twice(tmp_path):
    spec = importlib.util.spec_from_file_location("build_reward_models", SCRIPT)
    build = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build  # its dataclasses look their module up
    spec.loader.exec_module(build)
    build.QUICK = dataclasses.replace(build.QUICK, train_prompts=48, held_out_prompts=8)  # the same path, smaller
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        for name in ("a", "b"):
            build.main(["--quick", "--output-dir", str(tmp_path / name)])
    finally:  # the script fixes both for the whole process
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        sys.modules.pop(spec.name, None)
    for model in ("multistep_prm", "multistep_orm"):
        for file in ("model.safetensors", "training.json", "config.json", "tokenizer.json"):
            assert (tmp_path / "a" / model / file).read_bytes() == (tmp_path / "b" / model / file).read_bytes(), (model, file)
