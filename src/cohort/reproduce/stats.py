"""The statistics behind a reproduction's verdicts: means with 95% intervals over seeds, paired
differences, the minimum detectable effect, and the four verdicts.

Arms share seed s (data order, sampling seeds) and the held-out problems, so a claim "arm A beats
arm B" is judged on the per-seed differences A_s - B_s: a Student-t interval over those differences
(pairing removes what the two runs of one seed share). The **minimum detectable effect** (MDE) is the
true difference that a two-sided 5% test over n paired seeds finds with 80% power,
``(t_0.975 + t_0.80) x sd / sqrt(n)``; it is computed before a run from an assumed sd
(``plan.PRIOR_DIFFERENCE_SD``) and after it from the observed one. Verdicts:

* **reproduced**: the difference's interval lies above 0 (the paper's direction);
* **not reproduced**: it lies below 0, or it contains 0 but rules out an effect of the paper's size;
* **not testable at this scale**: both arms fell below the initial policy (a comparison of two
  failures), or the interval contains 0 and the MDE exceeds the paper's effect (a null result that
  could not have seen the paper's effect);
* **inconclusive at this scale**: anything else.

A quick run's intervals (2 seeds, a few steps) are not meaningful: it is judged "not judged".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
NOT_TESTABLE, INCONCLUSIVE = "not testable at this scale", "inconclusive at this scale"
NOT_JUDGED = "not judged (quick run: its intervals are not meaningful)"
NOT_RUN = "not run (an arm it compares was not selected)"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE, INCONCLUSIVE, NOT_JUDGED, NOT_RUN)

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
T_80 = {1: 1.376, 2: 1.061, 3: 0.978, 4: 0.941, 5: 0.920, 6: 0.906, 7: 0.896, 8: 0.889, 9: 0.883, 10: 0.879,
        12: 0.873, 15: 0.866, 20: 0.860, 30: 0.854}


def _quantile(table: dict[int, float], df: int, limit: float) -> float:
    if df < 1:
        return float("nan")
    return table[max(d for d in table if d <= df)] if df <= 30 else limit


def t_critical(df: int) -> float:
    """The two-sided 95% Student-t quantile for ``df`` degrees of freedom (table; 1.96 beyond 30)."""
    return _quantile(T_975, df, 1.96)


def minimum_detectable_effect(sd: float, n: int) -> float:
    """The true paired difference a two-sided 5% t-test over ``n`` seeds detects with 80% power.

    >>> round(minimum_detectable_effect(0.03, 5), 4)
    0.0498
    """
    if n < 2 or not math.isfinite(sd):
        return float("inf")
    return (t_critical(n - 1) + _quantile(T_80, n - 1, 0.842)) * sd / math.sqrt(n)


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its 95% interval, clipped to ``bounds`` (a single seed: no interval)."""

    mean: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float | None], bounds: tuple[float, float] = (0.0, 1.0)) -> "Estimate":
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), ())
        mean = statistics.fmean(values)
        if len(values) < 2:
            return cls(mean, float("nan"), float("nan"), tuple(values))
        half = t_critical(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        return cls(mean, max(bounds[0], mean - half), min(bounds[1], mean + half), tuple(values))

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) >= 2 else float("nan")

    def text(self, digits: int = 3) -> str:
        if math.isnan(self.mean):
            return "n/a"
        if math.isnan(self.low):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Estimate":
        return cls(data["mean"], data["low"], data["high"], tuple(data["values"]))


def paired_difference(better: dict[int, float], worse: dict[int, float]) -> Estimate:
    """better_s - worse_s over the seeds both have (an interval in [-1, 1] for fractions)."""
    seeds = sorted(set(better) & set(worse))
    return Estimate.of([better[s] - worse[s] for s in seeds], bounds=(-1.0, 1.0))


def verdict(difference: Estimate, *, paper_effect: float | None, mde_before: float, collapsed: bool, quick: bool) -> str:
    """The verdict for "better exceeds worse" from the paired difference (see the module docstring)."""
    if quick:
        return NOT_JUDGED
    if collapsed:
        return NOT_TESTABLE
    if math.isnan(difference.low):
        return INCONCLUSIVE
    if difference.low > 0:
        return REPRODUCED
    if difference.high < 0:
        return NOT_REPRODUCED
    if paper_effect is not None and mde_before > paper_effect:
        return NOT_TESTABLE
    if paper_effect is not None and difference.high < paper_effect:
        return NOT_REPRODUCED
    return INCONCLUSIVE
