"""``cohort reproduce``: DeepSeekMath's comparisons in miniature, on the built-in multi-step task.

Arms (see :mod:`cohort.reproduce.plan`): SFT, RFT, online RFT, DPO, PPO, GRPO with outcome
supervision (rule, and a trained ORM), GRPO with process supervision (a trained PRM, fixed or
retrained each iteration), and Dr. GRPO; each with several seeds and one budget of samples. Out
come ``DIR/results.json``, ``DIR/report.html`` and ``DIR/figures/*.png``: Figure 5 (accuracy against step), Figure 6
(iterative RL), Figure 7 (pass@K / maj@K), the length bias, and a verdict for every claim.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cohort.records import dumps
from cohort.reproduce import figures
from cohort.reproduce.analysis import arm_results, judge_claims
from cohort.reproduce.page import render
from cohort.reproduce.phases import figure7, train_reward_models
from cohort.reproduce.plan import ARMS, FULL, QUICK, Scale
from cohort.reproduce.runner import (
    Job,
    ProgressFn,
    default_workers,
    run_directory,
    run_jobs,
)

__all__ = ["FULL", "QUICK", "reproduce"]


def reproduce(out: Path, *, quick: bool = False, seeds: int | None = None, workers: int | None = None,
              progress: ProgressFn = print) -> dict[str, Any]:
    """Run (or continue) a reproduction into ``out``; returns the results (also written to results.json)."""
    started = time.perf_counter()
    scale = QUICK if quick else FULL
    if seeds is not None:
        if seeds < 2:
            raise ValueError(f"--seeds must be >= 2 (a confidence interval needs two), got {seeds}")
        scale = Scale(**{**scale.to_dict(), "seeds": seeds})
    out.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(scale.seeds))
    reward_models = train_reward_models(scale, out, progress)
    jobs = [Job(arm.name, seed, run_directory(out, arm.name, seed)) for seed in seed_list for arm in ARMS]
    workers = workers or default_workers()
    run_jobs(jobs, scale, out, workers, progress)
    fig7 = figure7(scale, out, seed_list, progress)
    arms = arm_results(out, seed_list)
    results = {
        "mode": "quick" if quick else "full", "scale": {**scale.to_dict(), "workers": workers}, "reward_models": reward_models,
        "claims": judge_claims(arms, fig7, scale), "figure7": fig7,
        "arms": {name: {k: v for k, v in arm.items() if k != "runs"} for name, arm in arms.items()},
    }
    results["wall_seconds"] = time.perf_counter() - started  # this invocation (a resumed one skips finished pieces)
    results["run_seconds"] = sum(arm["wall_seconds"] for arm in arms.values())  # every arm's runs, whenever they ran
    plots = [
        figures.curves("figure5", "Held-out pass@1 against step: RFT, online RFT, GRPO+OS, GRPO+PS (Figure 5)", arms,
                       ["rft", "online_rft", "grpo_os", "grpo_ps"]),
        figures.curves("figure6", "GRPO+PS with and without PRM retraining (Figure 6)", arms, ["grpo_ps", "grpo_ps_iterative"],
                       [k * (scale.steps // scale.iterations) + 0.5 for k in range(1, scale.iterations)]),
        figures.pass_and_maj(fig7),
        figures.lengths(arms, ["grpo_os", "dr_grpo"]),
        figures.finals(arms),
    ]
    (out / "results.json").write_text(dumps(results, indent=1))
    (out / "report.html").write_text(render(results, plots), encoding="utf-8")
    (out / "figures").mkdir(exist_ok=True)
    for plot in plots:  # the same figures as files, for papers and READMEs
        (out / "figures" / f"{plot.id}.png").write_bytes(plot.png)
    progress(f"wrote {out / 'results.json'}, {out / 'report.html'} and {out / 'figures'}/ ({results['wall_seconds'] / 60:.1f} min)")
    return results

