"""`cohort reproduce --quick`: the same code path as the full run, in a few minutes here.

Real runs of every arm on the bundled multi-step model with the shipped reward models; the output's
structure, the claims (a quick run judges none), the per-run measures, the report in a real browser,
resuming that skips what is done, --arms / --steps, and the quality gate.
"""

from __future__ import annotations

import json
import shutil

import pytest
from built_once import built_once
from system_deps import requires_chromium
from test_report import browser, screenshot, show_whole_page  # noqa: F401  (the browser fixture)

from cohort.reproduce import reproduce
from cohort.reproduce.measures import MEASURES
from cohort.reproduce.plan import ARM_NAMES, ARMS, CLAIMS, FULL, QUICK
from cohort.reproduce.runner import arm_config
from cohort.reproduce.stats import NOT_JUDGED, NOT_RUN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
READS_QUICK_RUN = pytest.mark.shares("reproduce-quick")  # run first, back to back, on one worker (tests/xdist_order.py)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, worker_id):
    """One quick reproduction per session (read-only; a test that reruns it works on a copy)."""
    def run(out):
        messages: list[str] = []
        results = reproduce(out, quick=True, workers=2, rm_gate=0.0, progress=messages.append)
        return {"results": results, "messages": messages}

    out, value = built_once(tmp_path_factory, worker_id, "reproduce-quick", run)
    return out, value["results"], value["messages"]


@READS_QUICK_RUN
@pytest.mark.slow(seconds=45)  # the first of its unit: builds the quick run
def test_every_arm_and_claim_comes_out(quick_run):
    out, results, messages = quick_run
    assert set(results["arms"]) == set(ARM_NAMES)
    for name, arm in results["arms"].items():
        assert len(arm["final_pass1"]["values"]) == 2, name  # two seeds
        assert 0.0 <= arm["final_pass1"]["low"] <= arm["final_pass1"]["mean"] <= arm["final_pass1"]["high"] <= 1.0
        assert arm["curve"][0]["step"] == 0 and arm["curve"][-1]["step"] == results["scale"]["steps"]
        assert set(MEASURES) <= set(arm["measures"]) and 0 <= arm["measures"]["malformed_lines"]["end"]["mean"] <= 1
    for name in ("grpo_ps", "grpo_ps_min", "grpo_ps_vr", "grpo_ps_iterative", "grpo_orm"):
        assert "rm_within_group_auc" in results["arms"][name]["measures"], name
    assert "rm_within_group_auc" not in results["arms"]["grpo_ps_gold"]["measures"]
    assert [c["claim"] for c in results["claims"]] == [c.key for c in CLAIMS]
    assert all(c["verdict"] == NOT_JUDGED and c["paper"] for c in results["claims"])  # a quick run judges nothing
    assert sorted(results["figure7"]) == ["after-seed-0", "after-seed-1", "before-seed-0", "before-seed-1"]
    assert json.loads((out / "results.json").read_text())["claims"] == json.loads(json.dumps(results["claims"]))
    assert results["reward_models"]["prm"]["held_out"]["within_group_auc"] is not None
    figures = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}
    assert sorted(figures) == ["figure5.png", "figure6.png", "figure7.png", "finals.png", "length-bias.png"]
    assert all(png.startswith(b"\x89PNG") for png in figures.values())
    assert (out / "runs" / "grpo_ps_iterative" / "seed-0" / "iterations" / "iter-1" / "reward_model").is_dir()
    assert (out / "initial" / "seed-1" / "eval_before.jsonl").is_file()  # the initial policy, evaluated once per seed
    assert any("runs left" in m for m in messages)


@pytest.mark.parametrize("scale", [FULL, QUICK], ids=["full", "quick"])
def test_the_iterative_arm_is_evaluated_at_every_iteration_boundary(tmp_path, scale):
    arm = next(a for a in ARMS if a.name == "grpo_ps_iterative")
    config = arm_config(arm, scale, 0, tmp_path)
    per = config.iterative.steps_per_iteration
    assert config.train.steps == per * config.iterative.iterations and per % config.train.eval_every == 0


@READS_QUICK_RUN
def test_a_second_invocation_skips_what_is_done_and_redoes_what_is_missing(quick_run, tmp_path):
    shared, results, _ = quick_run
    out = tmp_path / "reproduce"
    shutil.copytree(shared, out)
    (out / "runs" / "dpo" / "seed-1" / "summary.json").unlink()
    messages: list[str] = []
    again = reproduce(out, quick=True, workers=2, rm_gate=0.0, progress=messages.append)
    assert "25 of 26 runs already finished: skipped" in messages
    assert any(m.startswith("done dpo seed 1") for m in messages) and not any(m.startswith("done sft") for m in messages)
    again = json.loads(json.dumps(again))  # as the shared run's results were recorded
    assert again["arms"]["grpo_os"]["final_pass1"] == results["arms"]["grpo_os"]["final_pass1"]
    assert again["arms"]["dpo"]["final_pass1"] == results["arms"]["dpo"]["final_pass1"]  # the rerun is deterministic


@READS_QUICK_RUN
@requires_chromium
def test_the_report_renders_in_chromium(quick_run, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    out, results, _ = quick_run
    browser.get((out / "report.html").resolve().as_uri())
    show_whole_page(browser)
    images = browser.find_elements(By.CSS_SELECTOR, "img[id^=plot-]")
    assert {img.get_attribute("id") for img in images} == {"plot-figure5", "plot-figure6", "plot-figure7", "plot-length-bias", "plot-finals"}
    assert len(browser.find_elements(By.CSS_SELECTOR, "#arms-table tr[data-arm]")) == len(ARM_NAMES)
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img) for img in images)
    rows = browser.find_elements(By.CSS_SELECTOR, "#claims-table tr[data-claim]")
    assert len(rows) == len(CLAIMS) and all(row.text for row in rows)
    page = screenshot(browser)
    assert len(page.resize((64, 64)).getcolors(maxcolors=64 * 64)) > 20  # not a blank page


@pytest.mark.slow(seconds=17)
def test_selected_arms_and_steps_keep_the_results_shape(tmp_path):
    """--arms and --steps size a run; claims whose arms did not run say so; results.json keeps its keys."""
    results = reproduce(tmp_path, quick=True, workers=1, arms="grpo_os,grpo_ps_gold", steps=4, rm_gate=0.0, progress=lambda m: None)
    assert set(results) == {"mode", "scale", "reward_models", "claims", "figure7", "arms", "wall_seconds", "run_seconds"}
    assert list(results["arms"]) == ["grpo_os", "grpo_ps_gold"] and results["scale"]["steps"] == 4
    verdicts = {c["claim"]: c["verdict"] for c in results["claims"]}
    assert verdicts["gold_process_vs_outcome"] == NOT_JUDGED and verdicts["process_vs_outcome"] == NOT_RUN
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["grpo_os", "grpo_ps_gold"]


def test_the_quality_gate_stops_a_reproduction_before_any_run(tmp_path):
    with pytest.raises(ValueError, match=r"the quality gate stops this reproduction: the shipped PRM .* below --rm-gate 0.999, "
                                         r"and grpo_ps train against it"):
        reproduce(tmp_path, quick=True, arms="grpo_os,grpo_ps", rm_gate=0.999, progress=lambda m: None)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="unknown arm"):
        reproduce(tmp_path, quick=True, arms="grpo_os,grpo_pss", progress=lambda m: None)
