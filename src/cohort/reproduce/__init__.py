"""``cohort reproduce``: DeepSeekMath's comparisons in miniature, on the built-in multi-step task.

Arms (see :mod:`cohort.reproduce.plan`): SFT, RFT, online RFT, DPO, PPO, GRPO with outcome
supervision (rule, and the shipped ORM), GRPO with process supervision (the shipped PRM under the
paper's sum-form credit and PURE's min form, with the rule mixed in, the gold step checker, and the
PRM retrained each iteration), and Dr. GRPO; each with several seeds and one budget of samples. Out
come ``DIR/results.json``, ``DIR/report.html`` and ``DIR/figures/*.png``: Figure 5 (accuracy against
step), Figure 6 (iterative RL), Figure 7 (pass@K / maj@K), the length bias, and a verdict for every
claim from paired per-seed differences (:mod:`cohort.reproduce.stats`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cohort.records import dumps
from cohort.reproduce import figures
from cohort.reproduce.analysis import arm_results, judge_claims
from cohort.reproduce.figure7 import figure7
from cohort.reproduce.page import render
from cohort.reproduce.phases import initial_evaluations, reward_models
from cohort.reproduce.plan import FULL, QUICK, Scale, select_arms
from cohort.reproduce.runner import ProgressFn, default_workers, jobs_for, run_jobs

__all__ = ["FULL", "QUICK", "reproduce"]


def _scale(quick: bool, seeds: int | None, steps: int | None, rm_gate: float | None) -> Scale:
    scale = QUICK if quick else FULL
    if seeds is not None:
        if seeds < 2:
            raise ValueError(f"--seeds must be >= 2 (a confidence interval needs two), got {seeds}")
        scale = Scale(**{**scale.to_dict(), "seeds": seeds, "other_seeds": min(seeds, scale.other_seeds)})
    if steps is not None:
        scale = scale.with_steps(steps)
    return Scale(**{**scale.to_dict(), "rm_gate": rm_gate if rm_gate is not None else scale.rm_gate})


def _plots(arms: dict[str, Any], fig7: dict[str, Any], scale: Scale) -> list:
    plots = []
    fig5 = [n for n in ("rft", "online_rft", "grpo_os", "grpo_ps", "grpo_ps_min", "grpo_ps_gold", "grpo_ps_vr") if n in arms]
    if fig5:
        plots.append(figures.curves("figure5", "Held-out pass@1 against step: RFT, online RFT, GRPO+OS, GRPO+PS (Figure 5)", arms, fig5))
    if "grpo_ps_iterative" in arms:
        names = [n for n in ("grpo_ps", "grpo_ps_iterative") if n in arms]
        plots.append(figures.curves("figure6", "GRPO+PS with and without PRM retraining (Figure 6)", arms, names,
                                    [k * (scale.steps // scale.iterations) + 0.5 for k in range(1, scale.iterations)]))
    if fig7:
        plots.append(figures.pass_and_maj(fig7))
    if "grpo_os" in arms and "dr_grpo" in arms:
        plots.append(figures.lengths(arms, ["grpo_os", "dr_grpo"]))
    plots.append(figures.finals(arms))
    return plots


def reproduce(out: Path, *, quick: bool = False, seeds: int | None = None, workers: int | None = None, arms: str | None = None,
              steps: int | None = None, rm_gate: float | None = None, progress: ProgressFn = print) -> dict[str, Any]:
    """Run (or continue) a reproduction into ``out``; returns the results (also written to results.json).

    ``arms``: a comma-separated selection (default all); ``steps``: training steps per run; ``rm_gate``:
    the shipped PRM's held-out within-group AUC must reach this before an arm trains against it (0: off).
    """
    started = time.perf_counter()
    scale = _scale(quick, seeds, steps, rm_gate)
    selected = select_arms(arms)
    out.mkdir(parents=True, exist_ok=True)
    models = reward_models(scale, out, selected, progress, scale.rm_gate or None)
    workers = workers or default_workers()
    initial_evaluations(scale, out, list(range(max(arm.seed_count(scale) for arm in selected))), progress)
    run_jobs(jobs_for(selected, scale, out), scale, out, workers, progress)
    os_seeds = list(range(scale.other_seeds)) if any(a.name == "grpo_os" for a in selected) else []  # Figure 7's seeds
    fig7 = figure7(scale, out, os_seeds, progress) if os_seeds else {}
    progress("measuring the runs' completions and reward models")
    results_arms = arm_results(out, selected, scale)
    results = {
        "mode": "quick" if quick else "full", "scale": {**scale.to_dict(), "workers": workers}, "reward_models": models,
        "claims": judge_claims(results_arms, fig7, scale), "figure7": fig7,
        "arms": {name: {k: v for k, v in arm.items() if k != "runs"} for name, arm in results_arms.items()},
    }
    results["wall_seconds"] = time.perf_counter() - started  # this invocation (a resumed one skips finished pieces)
    results["run_seconds"] = sum(arm["wall_seconds"] for arm in results_arms.values())  # every run, whenever it ran
    plots = _plots(results_arms, fig7, scale)
    (out / "results.json").write_text(dumps(results, indent=1))
    (out / "report.html").write_text(render(results, plots), encoding="utf-8")
    (out / "figures").mkdir(exist_ok=True)
    for plot in plots:  # the same figures as files, for papers and READMEs
        (out / "figures" / f"{plot.id}.png").write_bytes(plot.png)
    progress(f"wrote {out / 'results.json'}, {out / 'report.html'} and {out / 'figures'}/ ({results['wall_seconds'] / 60:.1f} min)")
    return results
