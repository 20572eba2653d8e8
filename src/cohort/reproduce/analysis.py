"""What a reproduction's runs say: per-arm means with 95% confidence intervals over seeds, the curves,
and a verdict for each of the paper's claims (reproduced, not reproduced, inconclusive at this scale).

A claim compares two numbers (``better`` should exceed ``worse``). Reproduced: the ordering is the
paper's and the two 95% intervals do not overlap; not reproduced: the opposite ordering with
separate intervals; otherwise inconclusive. Intervals are Student-t over seeds (few seeds give wide
intervals: that is the honest width at this scale).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cohort.reproduce.plan import ARMS, CLAIMS, Claim, Scale
from cohort.reproduce.runner import run_directory

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t_critical(df: int) -> float:
    """The two-sided 95% Student-t quantile for ``df`` degrees of freedom (table; 1.96 beyond 30)."""
    if df < 1:
        return float("nan")
    known = [d for d in sorted(T_975) if d <= df]
    return T_975[known[-1]] if df <= 30 else 1.96


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its 95% interval (a single seed: no interval)."""

    mean: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float]) -> "Estimate":
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), ())
        mean = statistics.fmean(values)
        if len(values) < 2:
            return cls(mean, float("nan"), float("nan"), tuple(values))
        half = t_critical(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        return cls(mean, mean - half, mean + half, tuple(values))

    def text(self, digits: int = 3) -> str:
        if math.isnan(self.low):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "values": list(self.values)}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _pass1(summary: dict[str, Any]) -> float:
    return float(summary["pass_at_k"]["1"])


def seed_results(out: Path, arm: str, seed: int) -> dict[str, Any]:
    """One run's numbers: final pass@1 and greedy accuracy, the held-out curve, lengths, wall time."""
    directory = run_directory(out, arm, seed)
    before = json.loads((directory / "eval_before.json").read_text())
    after = json.loads((directory / "eval_after.json").read_text())
    curve = [(0, _pass1(before))] + [(point["step"], _pass1(point)) for point in _jsonl(directory / "eval_curve.jsonl")]
    metrics = _jsonl(directory / "metrics.jsonl")
    summary = json.loads((directory / "summary.json").read_text())
    return {"pass1": _pass1(after), "greedy": after["greedy_accuracy"], "curve": curve, "metrics": metrics,
            "wall_seconds": summary["wall_seconds"]}


def arm_results(out: Path, seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Every arm: final pass@1 and greedy (mean and CI over seeds), the mean curve, wall time."""
    results = {}
    for arm in ARMS:
        runs = [seed_results(out, arm.name, s) for s in seeds]
        steps = sorted({step for run in runs for step, _ in run["curve"]})
        curve = [{"step": step, **Estimate.of([dict(run["curve"]).get(step) for run in runs]).to_dict()} for step in steps]
        results[arm.name] = {
            "label": arm.label, "figure": arm.figure, "final_pass1": Estimate.of([r["pass1"] for r in runs]).to_dict(),
            "final_greedy": Estimate.of([r["greedy"] for r in runs]).to_dict(), "curve": curve,
            "wall_seconds": sum(r["wall_seconds"] for r in runs), "runs": runs,
        }
    return results


def _estimate(data: dict[str, Any]) -> Estimate:
    return Estimate(data["mean"], data["low"], data["high"], tuple(data["values"]))


def _iteration_gains(arm: dict[str, Any], scale: Scale) -> tuple[Estimate, Estimate]:
    """Per seed: held-out pass@1 gained during the second iteration, and during the third (paper's 1 and 2)."""
    per = scale.steps // scale.iterations
    first, second = [], []
    for run in arm["runs"]:
        curve = dict(run["curve"])
        points = [curve.get(k * per) for k in range(1, scale.iterations + 1)]
        if None not in points and len(points) >= 2:
            first.append(points[1] - points[0])
            if len(points) >= 3:
                second.append(points[2] - points[1])
    return Estimate.of(first), Estimate.of(second) if second else Estimate.of([0.0] * len(first))


def _maj_and_pass_gains(figure7: dict[str, Any]) -> tuple[Estimate, Estimate, int]:
    """Per seed, at the largest K: (after - before) of maj@K and of pass@K."""
    before = figure7["before"]
    k = max(int(key) for key in before["maj_at_k"])
    afters = [v for label, v in figure7.items() if label.startswith("after")]
    maj = Estimate.of([a["maj_at_k"][str(k)] - before["maj_at_k"][str(k)] for a in afters])
    pas = Estimate.of([a["pass_at_k"][str(k)] - before["pass_at_k"][str(k)] for a in afters])
    return maj, pas, k


def _wrong_length_growth(arm: dict[str, Any]) -> Estimate:
    """Per seed: mean length of wrong samples over the last third of steps minus over the first third."""
    growth = []
    for run in arm["runs"]:
        values = [m.get("completion_len/wrong_mean") for m in run["metrics"]]
        values = [v for v in values if v is not None]
        third = max(1, len(values) // 3)
        if len(values) >= 2:
            growth.append(statistics.fmean(values[-third:]) - statistics.fmean(values[:third]))
    return Estimate.of(growth)


def _numbers(claim: Claim, arms: dict[str, Any], figure7: dict[str, Any], scale: Scale) -> tuple[Estimate, Estimate, str]:
    """The two numbers a claim compares and what they are."""
    if claim.measure == "final_pass1":
        return _estimate(arms[claim.better]["final_pass1"]), _estimate(arms[claim.worse]["final_pass1"]), "final held-out pass@1"
    if claim.measure == "gain_iteration1_vs_2":
        first, second = _iteration_gains(arms[claim.better], scale)
        return first, second, "pass@1 gained in the first retrained iteration vs the next"
    if claim.measure == "maj_vs_pass":
        maj, pas, k = _maj_and_pass_gains(figure7)
        return maj, pas, f"after - before at K={k}: maj@K vs pass@K"
    return _wrong_length_growth(arms[claim.better]), _wrong_length_growth(arms[claim.worse]), "growth of the mean wrong-answer length (tokens)"


def verdict(better: Estimate, worse: Estimate) -> tuple[str, bool]:
    """(verdict, intervals separate) for 'better should exceed worse'."""
    if any(math.isnan(x) for x in (better.low, better.high, worse.low, worse.high)):
        return "inconclusive at this scale", False
    if better.low > worse.high:
        return "reproduced", True
    if worse.low > better.high:
        return "not reproduced", True
    return "inconclusive at this scale", False


def judge_claims(arms: dict[str, Any], figure7: dict[str, Any], scale: Scale) -> list[dict[str, Any]]:
    """Every claim with the two numbers, the ordering that came out, and the verdict."""
    judged = []
    for claim in CLAIMS:
        better, worse, what = _numbers(claim, arms, figure7, scale)
        outcome, separated = verdict(better, worse)
        ordering = "as in the paper" if better.mean > worse.mean else "opposite to the paper"
        judged.append({
            "claim": claim.key, "text": claim.text, "paper": claim.paper, "measure": what,
            "better": {"name": claim.better, **better.to_dict()}, "worse": {"name": claim.worse, **worse.to_dict()},
            "ordering": ordering, "intervals_separate": separated, "verdict": outcome,
            "ours": f"{better.text()} vs {worse.text()} ({ordering})",
        })
    return judged
