"""Figure 7: pass@K and maj@K before and after GRPO, and the claim "RL improves Maj@K but not Pass@K".

The initial model and GRPO+OS's final model of every seed are evaluated with K samples per problem
on the same held-out problems. The initial model is evaluated once per seed too, with that seed's
sampling seed, so each seed's gain (after - before) carries the sampling noise of both sides and
the before-model's variance enters the interval. The claim is judged at every K: pass@K rising
significantly there contradicts it; maj@K rising while pass@K does not supports it. Overall it is
reproduced when it holds at every K >= 2, not reproduced when pass@K rises at some K >= 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cohort.records import dumps
from cohort.reproduce.plan import Claim, Scale, common_overrides
from cohort.reproduce.runner import ProgressFn, run_directory
from cohort.reproduce.stats import INCONCLUSIVE, NOT_JUDGED, NOT_REPRODUCED, REPRODUCED, Estimate, paired_difference

CEILING = 0.98
"""At this pass@K before RL there is no room left to rise: such a K is not counted against the claim."""


def _evaluate(scale: Scale, out: Path, model: str, seed: int) -> dict[str, Any]:
    from cohort.assets import resolve_builtin
    from cohort.config import load_config
    from cohort.data.tasks import task_from_settings
    from cohort.evaluation.held_out import evaluate_held_out
    from cohort.models.loading import load_policy, load_tokenizer
    from cohort.rewards.configured import run_rewards

    config = load_config(None, common_overrides(scale, 0, out / "scratch") + [f"data.eval_limit={scale.fig7_problems}"])
    task = task_from_settings(config.data, config.train.seed)
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= scale.fig7_samples]
    location = resolve_builtin(model)
    summary, _ = evaluate_held_out(config, task, load_policy(location), load_tokenizer(location), run_rewards(config, task),
                                   num_samples=scale.fig7_samples, ks=ks, seed=2024 + seed)
    return summary.to_dict()


def figure7(scale: Scale, out: Path, seeds: list[int], progress: ProgressFn) -> dict[str, Any]:
    """``before-seed-s`` and ``after-seed-s`` evaluations (K = 1, 2, 4, .. fig7_samples) for each seed."""
    directory = out / "figure7"
    directory.mkdir(parents=True, exist_ok=True)
    models = {}
    for seed in seeds:
        models[f"before-seed-{seed}"] = ("builtin:multistep", seed)
        models[f"after-seed-{seed}"] = (str(run_directory(out, "grpo_os", seed) / "final"), seed)
    results = {}
    for label, (model, seed) in models.items():
        path = directory / f"{label}.json"
        if not path.is_file():
            progress(f"figure 7: {scale.fig7_samples} samples per problem for {label}")
            path.write_text(dumps(_evaluate(scale, out, model, seed), indent=1))
        results[label] = json.loads(path.read_text())
    return results


def gains(figure7: dict[str, Any], metric: str, k: int) -> Estimate:
    """after - before of ``metric`` (pass_at_k or maj_at_k) at K, paired by seed."""
    seeds = [int(label.rsplit("-", 1)[1]) for label in figure7 if label.startswith("after-seed-")]
    after = {s: figure7[f"after-seed-{s}"][metric][str(k)] for s in seeds}
    before = {s: figure7[f"before-seed-{s}"][metric][str(k)] for s in seeds if f"before-seed-{s}" in figure7}
    return paired_difference(after, before)


def _at_k(figure7: dict[str, Any], k: int) -> dict[str, Any]:
    maj, pas = gains(figure7, "maj_at_k", k), gains(figure7, "pass_at_k", k)
    befores = [v["pass_at_k"][str(k)] for label, v in figure7.items() if label.startswith("before")]
    ceiling = min(befores) >= CEILING
    if pas.low > 0 and not ceiling:
        outcome = NOT_REPRODUCED
    elif maj.low > 0 and (ceiling or not pas.low > 0):
        outcome = REPRODUCED
    else:
        outcome = INCONCLUSIVE
    return {"k": k, "maj_gain": maj.to_dict(), "pass_gain": pas.to_dict(), "pass_before": sum(befores) / len(befores),
            "ceiling": ceiling, "verdict": outcome}


def judge_maj_not_pass(claim: Claim, figure7: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """The claim at every K, and overall (see the module docstring)."""
    ks = sorted(int(k) for k in next(iter(figure7.values()))["pass_at_k"])
    per_k = [_at_k(figure7, k) for k in ks]
    judged = [row for row in per_k if row["k"] >= 2]
    if scale.quick:
        outcome = NOT_JUDGED
    elif any(row["verdict"] == NOT_REPRODUCED for row in judged):
        outcome = NOT_REPRODUCED
    elif judged and all(row["verdict"] == REPRODUCED for row in judged):
        outcome = REPRODUCED
    else:
        outcome = INCONCLUSIVE
    top = per_k[-1]
    rising = [str(row["k"]) for row in judged if row["verdict"] == NOT_REPRODUCED]
    ours = (f"after - before at K={top['k']}: maj@K {Estimate.from_dict(top['maj_gain']).text()}, pass@K "
            f"{Estimate.from_dict(top['pass_gain']).text()}" + (f"; pass@K rises at K = {', '.join(rising)}" if rising else ""))
    return {
        "claim": claim.key, "text": claim.text, "paper": claim.paper, "measure": "after - before of maj@K and pass@K, every K",
        "better": {"name": claim.better, **top["maj_gain"]}, "worse": {"name": claim.worse, **top["pass_gain"]},
        "per_k": per_k, "paper_effect": claim.paper_effect, "ordering": "", "intervals_separate": outcome in (REPRODUCED, NOT_REPRODUCED),
        "verdict": outcome, "ours": ours,
    }
