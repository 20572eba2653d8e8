"""The report shows each method's own panels and does not list another method's metrics as missing."""

from __future__ import annotations

import re

import pytest

from cohort.report import metric_panels, write_report
from test_methods import METHODS, method_config, train


def test_panels_are_chosen_by_method():
    everything = {panel.id for panel in metric_panels(set())}
    assert {"dpo-rewards", "value-loss", "kept-frac", "nll", "kl", "frac-zero-std"} <= everything
    dpo = {panel.id for panel in metric_panels(set(), "dpo")}
    assert {"dpo-rewards", "dpo-accuracy", "loss"} <= dpo and not {"kl", "frac-zero-std", "value-loss"} & dpo
    sft = {panel.id for panel in metric_panels(set(), "sft")}
    assert "nll" in sft and not {"reward", "accuracy", "kl"} & sft


@pytest.mark.parametrize("method", ["ppo", "dpo", "sft"])
def test_a_runs_report_draws_its_methods_metrics(tmp_path, tiny_llama_dir, method):
    task = tmp_path / "sums.jsonl"
    task.write_text("".join(f'{{"prompt": "{a}+{b}=", "answer": "{a + b}"}}\n' for a in range(5) for b in range(5)))
    out = tmp_path / method
    train(method_config(out, tiny_llama_dir, task, method, "train.steps=2", "train.eval_before=false"))
    html = write_report(out).read_text()
    drawn = set(re.findall(r'id="plot-([\w-]+)"', html))
    expected = {"ppo": {"value-loss", "value-fit", "kl-in-reward", "reward"}, "dpo": {"dpo-rewards", "dpo-accuracy"}, "sft": {"nll"}}
    assert expected[method] <= drawn, drawn
    assert "frac_zero_std" not in html or method == "grpo"  # no GRPO metric is listed as missing
    assert f"<td>{method}</td>" in html


def test_methods_list_is_complete():
    assert sorted(METHODS) == ["dpo", "grpo", "online_rft", "ppo", "rft", "sft"]
