"""`cohort reproduce --quick`: the same code path as the full run, in well under a minute here.

Real runs of every arm on the bundled multi-step model; the output's structure, the claims' verdicts,
the report in a real browser, and resuming that skips what is done.
"""

from __future__ import annotations

import json

import pytest
from system_deps import requires_chromium
from test_report import browser, screenshot, show_whole_page  # noqa: F401  (the browser fixture)

from cohort.reproduce import reproduce
from cohort.reproduce.plan import ARM_NAMES, ARMS, CLAIMS, FULL, QUICK
from cohort.reproduce.runner import arm_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VERDICTS = {"reproduced", "not reproduced", "inconclusive at this scale"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    messages: list[str] = []
    results = reproduce(out, quick=True, workers=2, progress=messages.append)
    return out, results, messages


def test_every_arm_and_claim_comes_out(quick_run):
    out, results, messages = quick_run
    assert set(results["arms"]) == set(ARM_NAMES)
    for name, arm in results["arms"].items():
        assert len(arm["final_pass1"]["values"]) == 2, name  # two seeds
        assert arm["final_pass1"]["low"] <= arm["final_pass1"]["mean"] <= arm["final_pass1"]["high"]
        assert arm["curve"][0]["step"] == 0 and arm["curve"][-1]["step"] == results["scale"]["steps"]
    assert [c["claim"] for c in results["claims"]] == [c.key for c in CLAIMS]
    assert all(c["verdict"] in VERDICTS and c["paper"] for c in results["claims"])
    assert sorted(results["figure7"]) == ["after-seed-0", "after-seed-1", "before"]
    assert json.loads((out / "results.json").read_text())["claims"] == json.loads(json.dumps(results["claims"]))
    assert (out / "reward_models" / "prm" / "training.json").is_file()
    figures = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}
    assert sorted(figures) == ["figure5.png", "figure6.png", "figure7.png", "finals.png", "length-bias.png"]
    assert all(png.startswith(b"\x89PNG") for png in figures.values())
    assert (out / "runs" / "grpo_ps_iterative" / "seed-0" / "iterations" / "iter-1" / "reward_model").is_dir()
    assert any("runs left" in m for m in messages)
    iteration_one = next(c for c in results["claims"] if c["claim"] == "iteration_one")
    assert iteration_one["better"]["values"], "the per-iteration gains need held-out points at every iteration's end"


@pytest.mark.parametrize("scale", [FULL, QUICK], ids=["full", "quick"])
def test_the_iterative_arm_is_evaluated_at_every_iteration_boundary(tmp_path, scale):
    arm = next(a for a in ARMS if a.name == "grpo_ps_iterative")
    config = arm_config(arm, scale, 0, tmp_path)
    per = config.iterative.steps_per_iteration
    assert config.train.steps == per * config.iterative.iterations and per % config.train.eval_every == 0


def test_a_second_invocation_skips_what_is_done_and_redoes_what_is_missing(quick_run):
    out, results, _ = quick_run
    (out / "runs" / "dpo" / "seed-1" / "summary.json").unlink()
    messages: list[str] = []
    again = reproduce(out, quick=True, workers=2, progress=messages.append)
    assert "19 of 20 runs already finished: skipped" in messages
    assert any(m.startswith("done dpo seed 1") for m in messages) and not any(m.startswith("done sft") for m in messages)
    assert "reward models already trained: skipped" in messages
    assert again["arms"]["grpo_os"]["final_pass1"] == results["arms"]["grpo_os"]["final_pass1"]
    assert again["arms"]["dpo"]["final_pass1"] == results["arms"]["dpo"]["final_pass1"]  # the rerun is deterministic


@requires_chromium
def test_the_report_renders_in_chromium(quick_run, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    out, results, _ = quick_run
    browser.get((out / "report.html").resolve().as_uri())
    show_whole_page(browser)
    images = browser.find_elements(By.CSS_SELECTOR, "img[id^=plot-]")
    assert {img.get_attribute("id") for img in images} == {"plot-figure5", "plot-figure6", "plot-figure7", "plot-length-bias", "plot-finals"}
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img) for img in images)
    rows = browser.find_elements(By.CSS_SELECTOR, "#claims-table tr[data-claim]")
    assert len(rows) == len(CLAIMS) and all(row.text for row in rows)
    page = screenshot(browser)
    assert len(page.resize((64, 64)).getcolors(maxcolors=64 * 64)) > 20  # not a blank page
