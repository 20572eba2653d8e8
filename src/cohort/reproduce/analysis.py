"""What a reproduction's runs say: per-arm means with 95% intervals over seeds, the curves, the
per-run measures, and a verdict for each of the paper's claims from paired per-seed differences
(:mod:`cohort.reproduce.stats`)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from cohort.reproduce.measures import MEASURES, run_measures
from cohort.reproduce.phases import initial_directory
from cohort.reproduce.plan import CLAIMS, PRIOR_DIFFERENCE_SD, Arm, Claim, Scale
from cohort.reproduce.runner import run_directory
from cohort.reproduce.stats import (
    INCONCLUSIVE,
    NOT_JUDGED,
    NOT_REPRODUCED,
    NOT_RUN,
    NOT_TESTABLE,
    REPRODUCED,
    Estimate,
    minimum_detectable_effect,
    paired_difference,
    verdict,
)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _pass1(summary: dict[str, Any]) -> float:
    return float(summary["pass_at_k"]["1"])


def _final_reward_model(arm: Arm, directory: Path) -> str | None:
    """The reward model an arm trained against at its end (iterative RL: its last retrained one)."""
    retrained = sorted((directory / "iterations").glob("iter-*/reward_model"), key=lambda p: int(p.parent.name[5:]))
    return str(retrained[-1]) if retrained else arm.reward_model


def seed_results(out: Path, arm: Arm, seed: int) -> dict[str, Any]:
    """One run's numbers: final pass@1 and greedy accuracy, the held-out curve, lengths, wall time, measures."""
    directory, initial = run_directory(out, arm.name, seed), initial_directory(out, seed)
    before = json.loads((initial / "eval_before.json").read_text())
    after = json.loads((directory / "eval_after.json").read_text())
    curve = [(0, _pass1(before))] + [(point["step"], _pass1(point)) for point in _jsonl(directory / "eval_curve.jsonl")]
    summary = json.loads((directory / "summary.json").read_text())
    kind = "outcome" if arm.reward_model and arm.reward_model.endswith("orm") else "process"
    measures = run_measures(directory, initial, arm.reward_model, _final_reward_model(arm, directory), kind)
    return {"pass1": _pass1(after), "pass1_before": _pass1(before), "greedy": after["greedy_accuracy"], "curve": curve,
            "metrics": _jsonl(directory / "metrics.jsonl"), "wall_seconds": summary["wall_seconds"], "measures": measures}


def _measure_estimates(runs: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = list(MEASURES) + (["rm_within_group_auc"] if any("rm_within_group_auc" in r["measures"]["end"] for r in runs.values()) else [])
    bounds = {"steps": (0.0, math.inf)}
    return {name: {when: Estimate.of([r["measures"][when].get(name) for r in runs.values()], bounds.get(name, (0.0, 1.0))).to_dict()
                   for when in ("start", "end")} for name in names}


def arm_results(out: Path, arms: tuple[Arm, ...], scale: Scale) -> dict[str, dict[str, Any]]:
    """Every arm: final pass@1 and greedy (mean and CI over seeds), the mean curve, measures, wall time."""
    results = {}
    for arm in arms:
        runs = {s: seed_results(out, arm, s) for s in range(arm.seed_count(scale))}
        steps = sorted({step for run in runs.values() for step, _ in run["curve"]})
        curve = [{"step": step, **Estimate.of([dict(run["curve"]).get(step) for run in runs.values()]).to_dict()} for step in steps]
        results[arm.name] = {
            "label": arm.label, "figure": arm.figure, "seeds": len(runs),
            "final_pass1": Estimate.of([r["pass1"] for r in runs.values()]).to_dict(),
            "final_greedy": Estimate.of([r["greedy"] for r in runs.values()]).to_dict(),
            "initial_pass1": statistics.fmean(r["pass1_before"] for r in runs.values()),
            "curve": curve, "measures": _measure_estimates(runs),
            "wall_seconds": sum(r["wall_seconds"] for r in runs.values()), "runs": runs,
        }
    return results


def _iteration_gain_difference(arm: dict[str, Any], scale: Scale) -> dict[int, float]:
    """Per seed: held-out pass@1 gained in the first retrained iteration minus the gain in the next."""
    per = scale.steps // scale.iterations
    gains = {}
    for seed, run in arm["runs"].items():
        curve = dict(run["curve"])
        points = [curve.get(k * per) for k in range(1, scale.iterations + 1)]
        if None not in points and len(points) >= 3:
            gains[seed] = (points[1] - points[0]) - (points[2] - points[1])
    return gains


def _wrong_length_growth(arm: dict[str, Any]) -> dict[int, float]:
    """Per seed: mean length of wrong samples over the last third of steps minus over the first third."""
    growth = {}
    for seed, run in arm["runs"].items():
        values = [v for v in (m.get("completion_len/wrong_mean") for m in run["metrics"]) if v is not None]
        third = max(1, len(values) // 3)
        if len(values) >= 2:
            growth[seed] = statistics.fmean(values[-third:]) - statistics.fmean(values[:third])
    return growth


def _per_seed(claim: Claim, arms: dict[str, Any], scale: Scale) -> tuple[dict[int, float], dict[int, float], str]:
    """The per-seed numbers a claim compares (better, worse) and what they are."""
    better, worse = arms[claim.better], arms[claim.worse]
    if claim.measure == "final_pass1":
        return ({s: r["pass1"] for s, r in better["runs"].items()}, {s: r["pass1"] for s, r in worse["runs"].items()},
                "final held-out pass@1")
    if claim.measure == "gain_iteration1_vs_2":
        return _iteration_gain_difference(better, scale), {s: 0.0 for s in better["runs"]}, \
            "pass@1 gained in the first retrained iteration minus the gain in the next"
    return _wrong_length_growth(better), _wrong_length_growth(worse), "growth of the mean wrong-answer length (tokens)"


def _collapsed(claim: Claim, arms: dict[str, Any]) -> bool:
    """Both arms of a final-pass@1 claim ended below the initial policy."""
    if claim.measure != "final_pass1":
        return False
    return all(arms[name]["final_pass1"]["mean"] < arms[name]["initial_pass1"] for name in (claim.better, claim.worse))


def judge_claim(claim: Claim, arms: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """One claim: the per-arm estimates, the paired difference, the MDE before and after, the verdict."""
    better, worse, what = _per_seed(claim, arms, scale)
    difference = paired_difference(better, worse)
    bounds = (-math.inf, math.inf) if claim.measure == "wrong_length_growth" else (0.0, 1.0)
    if claim.measure == "gain_iteration1_vs_2":
        bounds = (-1.0, 1.0)
    pairs = len(difference.values)
    mde_before = minimum_detectable_effect(PRIOR_DIFFERENCE_SD, pairs) if claim.paper_effect is not None else None
    outcome = verdict(difference, paper_effect=claim.paper_effect, mde_before=math.inf if mde_before is None else mde_before,
                      collapsed=_collapsed(claim, arms), quick=scale.quick)
    observed = minimum_detectable_effect(difference.sd, pairs) if pairs >= 2 else math.inf
    b, w = Estimate.of(list(better.values()), bounds), Estimate.of(list(worse.values()), bounds)
    ordering = "as in the paper" if difference.mean > 0 else "opposite to the paper"
    return {
        "claim": claim.key, "text": claim.text, "paper": claim.paper, "measure": what,
        "better": {"name": claim.better, **b.to_dict()}, "worse": {"name": claim.worse, **w.to_dict()},
        "difference": difference.to_dict(), "paper_effect": claim.paper_effect,
        "mde_before": mde_before if mde_before is None or math.isfinite(mde_before) else None,
        "mde_observed": observed if math.isfinite(observed) else None,
        "ordering": ordering, "intervals_separate": bool(pairs >= 2 and not difference.low <= 0 <= difference.high),
        "verdict": outcome, "ours": f"{b.text()} vs {w.text()}; paired difference {difference.text()} ({ordering})",
    }


def _not_run(claim: Claim) -> dict[str, Any]:
    return {"claim": claim.key, "text": claim.text, "paper": claim.paper, "measure": "", "better": {"name": claim.better},
            "worse": {"name": claim.worse}, "verdict": NOT_RUN, "ours": "—", "paper_effect": claim.paper_effect}


def judge_claims(arms: dict[str, Any], figure7: dict[str, Any], scale: Scale) -> list[dict[str, Any]]:
    """Every claim whose arms ran, with its numbers and verdict (see cohort.reproduce.stats); the others 'not run'."""
    from cohort.reproduce.figure7 import judge_maj_not_pass

    judged = []
    for claim in CLAIMS:
        if claim.better not in arms or claim.worse not in arms:
            judged.append(_not_run(claim))
        elif claim.measure == "maj_vs_pass":
            judged.append(judge_maj_not_pass(claim, figure7, scale) if figure7 else _not_run(claim))
        else:
            judged.append(judge_claim(claim, arms, scale))
    return judged


__all__ = ["INCONCLUSIVE", "NOT_JUDGED", "NOT_REPRODUCED", "NOT_TESTABLE", "REPRODUCED", "arm_results", "judge_claims"]
