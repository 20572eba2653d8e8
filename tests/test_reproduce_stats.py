"""The statistics behind `cohort reproduce`'s verdicts: intervals clipped to their range, paired
differences, the minimum detectable effect, the four verdicts, and Figure 7's claim at every K."""

from __future__ import annotations

import math

import pytest

from cohort.reproduce.figure7 import judge_maj_not_pass
from cohort.reproduce.plan import CLAIMS, FULL, QUICK
from cohort.reproduce.stats import (
    INCONCLUSIVE,
    NOT_JUDGED,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    Estimate,
    minimum_detectable_effect,
    paired_difference,
    verdict,
)


def test_intervals_are_clipped_to_the_range_of_a_fraction():
    e = Estimate.of([0.01, 0.02, 0.0])
    assert e.low == 0.0 and 0 < e.high < 1  # unclipped, the lower end would be -0.018
    assert Estimate.of([0.99, 1.0]).high == 1.0
    assert Estimate.of([0.5]).text() == "0.500" and math.isnan(Estimate.of([0.5]).low)


def test_pairing_removes_what_the_seeds_share():
    """Seed effects of +-0.1 hide a +0.02 difference between arms; the paired difference finds it."""
    better = {0: 0.52, 1: 0.32, 2: 0.42, 3: 0.62, 4: 0.22}
    worse = {seed: value - 0.02 + (0.002 if seed % 2 else -0.002) * (1 if seed < 4 else 0) for seed, value in better.items()}
    unpaired_overlap = Estimate.of(list(better.values())).low < Estimate.of(list(worse.values())).high
    difference = paired_difference(better, worse)
    assert unpaired_overlap and difference.low > 0 and difference.mean == pytest.approx(0.02)
    assert paired_difference({0: 0.5, 1: 0.5, 7: 0.1}, {0: 0.4, 1: 0.4}).values == pytest.approx((0.1, 0.1))  # common seeds only


def test_minimum_detectable_effect():
    # (t_0.975,4 + t_0.80,4) x 0.03 / sqrt(5) = (2.776 + 0.941) x 0.03 / 2.2361
    assert minimum_detectable_effect(0.03, 5) == pytest.approx(3.717 * 0.03 / math.sqrt(5))
    assert minimum_detectable_effect(0.03, 8) < minimum_detectable_effect(0.03, 5)
    assert minimum_detectable_effect(0.03, 1) == math.inf


@pytest.mark.parametrize("values, effect, mde, collapsed, quick, expected", [
    ([0.05, 0.06, 0.04], 0.009, 0.05, False, False, REPRODUCED),
    ([-0.05, -0.06, -0.04], 0.009, 0.05, False, False, NOT_REPRODUCED),
    ([0.05, 0.06, 0.04], 0.009, 0.05, True, False, NOT_TESTABLE),  # both arms below the initial policy
    ([0.01, -0.01, 0.0], 0.009, 0.05, False, False, NOT_TESTABLE),  # null result, MDE 0.05 > the paper's 0.009
    ([0.001, -0.001, 0.0], 0.02, 0.01, False, False, NOT_REPRODUCED),  # null result that rules out the paper's 0.02
    ([0.03, -0.01, 0.01], 0.02, 0.01, False, False, INCONCLUSIVE),  # the interval holds 0 and 0.02
    ([0.01, -0.01, 0.0], None, 0.05, False, False, INCONCLUSIVE),  # no paper number to compare with
    ([0.05, 0.06, 0.04], 0.009, 0.05, False, True, NOT_JUDGED),
])
def test_the_four_verdicts(values, effect, mde, collapsed, quick, expected):
    difference = Estimate.of(values, bounds=(-1.0, 1.0))
    assert verdict(difference, paper_effect=effect, mde_before=mde, collapsed=collapsed, quick=quick) == expected


def evaluation(pass_at_k, maj_at_k):
    return {"pass_at_k": {str(k): v for k, v in pass_at_k.items()}, "maj_at_k": {str(k): v for k, v in maj_at_k.items()}}


def figure(before_pass, after_pass, before_maj, after_maj, wobbles=(-0.01, 0.0, 0.01)):
    """Three seeds; per seed and K the given values plus a small seed wobble."""
    out = {}
    for seed, wobble in enumerate(wobbles):
        shift = lambda values: {k: v + wobble for k, v in values.items()}  # noqa: E731
        out[f"before-seed-{seed}"] = evaluation(shift(before_pass), shift(before_maj))
        out[f"after-seed-{seed}"] = evaluation(shift(after_pass), shift(after_maj))
    return out


CLAIM = next(c for c in CLAIMS if c.key == "maj_not_pass")


def test_maj_not_pass_is_judged_at_every_k():
    ks = {1: 0.2, 2: 0.35, 4: 0.5, 8: 0.65}
    rises = figure(ks, {1: 0.3, 2: 0.45, 4: 0.56, 8: 0.64}, {1: 0.2, 2: 0.2, 4: 0.25, 8: 0.3}, {1: 0.3, 2: 0.3, 4: 0.4, 8: 0.45})
    judged = judge_maj_not_pass(CLAIM, rises, FULL)
    assert [row["verdict"] for row in judged["per_k"]] == [NOT_REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, REPRODUCED]
    assert judged["verdict"] == NOT_REPRODUCED and "pass@K rises at K = 2, 4" in judged["ours"]
    flat = figure(ks, {1: 0.3, 2: 0.35, 4: 0.5, 8: 0.64}, {1: 0.2, 2: 0.2, 4: 0.25, 8: 0.3}, {1: 0.3, 2: 0.3, 4: 0.4, 8: 0.45})
    assert judge_maj_not_pass(CLAIM, flat, FULL)["verdict"] == REPRODUCED
    assert judge_maj_not_pass(CLAIM, flat, QUICK)["verdict"] == NOT_JUDGED


def test_a_k_at_the_ceiling_does_not_count_against_the_claim():
    before, after = {2: 0.985, 4: 0.99}, {2: 0.999, 4: 0.9995}
    judged = judge_maj_not_pass(CLAIM, figure(before, after, {2: 0.5, 4: 0.5}, {2: 0.6, 4: 0.6}, wobbles=(0.0, 0.001, 0.002)), FULL)
    assert all(row["ceiling"] for row in judged["per_k"]) and judged["verdict"] == REPRODUCED
