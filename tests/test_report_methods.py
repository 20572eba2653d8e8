"""The report shows each method's own panels and does not list another method's metrics as missing."""

from __future__ import annotations

import re

import pytest
from test_methods import METHODS, method_config, train

from cohort.methods import METHODS as REGISTERED
from cohort.monitoring.panels import run_panels
from cohort.report import write_report


def panel_ids(method):
    return {panel.id for panel in run_panels(set(), REGISTERED.get(method))}


def test_panels_are_chosen_by_method():
    dpo = panel_ids("dpo")
    assert {"dpo-rewards", "dpo-accuracy", "loss", "reward"} <= dpo and not {"kl", "frac-zero-std", "value-loss"} & dpo
    sft = panel_ids("sft")
    assert "nll" in sft and not {"reward", "accuracy", "kl", "truncated-frac"} & sft
    assert {"kl", "clip-frac", "frac-zero-std", "truncated-frac"} <= panel_ids("grpo")
    assert {"kl", "value-loss", "value-fit", "kl-in-reward"} <= panel_ids("ppo") and "frac-zero-std" not in panel_ids("ppo")
    assert {"kept-frac", "nll"} <= panel_ids("rft") and "truncated-frac" not in panel_ids("rft")


@pytest.mark.parametrize("method", METHODS)
def test_every_methods_panels_come_between_the_loops(method):
    """Rewards first, the method's own panels next (in its declared order), the loop's shape and time last."""
    ids = [panel.id for panel in run_panels(set(), REGISTERED.get(method))]
    own = [panel.id for panel in REGISTERED.get(method).panels]
    assert ids[ids.index("entropy") - len(own): ids.index("entropy")] == own
    assert ids[-1] == "lr" and len(set(ids)) == len(ids)


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


def test_the_tests_cover_every_registered_method():
    """The method tests take their list from the registry; a method missing from it would go untested."""
    assert METHODS == REGISTERED.names() and {"grpo", "ppo", "dpo", "ipo", "sft", "rft", "online_rft"} <= set(METHODS)
