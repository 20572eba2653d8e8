"""The unified paradigm's math: the coefficient loss (SFT/RFT), estimator properties, the policy-loss
registry, DPO's batch normaliser, GAE's input rule, whitening and explained variance, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.algo import (
    OUTCOME_ESTIMATORS,
    POLICY_LOSSES,
    ClipRange,
    LossNormalizers,
    coefficient_loss,
    dpo_loss,
    explained_variance,
    gae_advantages,
    masked_whiten,
    outcome_advantages,
)

F64 = torch.float64


def test_coefficient_loss_by_hand_with_its_gradient():
    """Eq. 5 with GC = [1, 0, 1]: -(1/3) sum_i GC_i mean_t log pi; gradient -GC_i / (3 |o_i|) per token."""
    logp = torch.tensor([[-1.0, -2.0, 9.9], [-0.5, -0.5, -0.5], [-3.0, 7.7, 7.7]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    coefficients = torch.tensor([1.0, 0.0, 1.0], dtype=F64)
    loss, stats = coefficient_loss(logp, coefficients, mask)
    assert float(loss.detach()) == pytest.approx(-(1 / 3) * ((-1.5) + (-3.0)), abs=1e-12)
    assert float(stats["nll"]) == pytest.approx((1 + 2 + 1.5 + 3) / 6, abs=1e-12)
    loss.backward()
    expected = torch.tensor([[-1 / 6, -1 / 6, 0], [0, 0, 0], [-1 / 3, 0, 0]], dtype=F64)
    assert torch.allclose(logp.grad, expected, atol=1e-12)


def test_coefficient_loss_with_gc_one_is_the_per_sequence_cross_entropy():
    logits = torch.randn(3, 4, 7, dtype=F64, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 7, (3, 4), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 3 + [False]])
    logp = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    loss, _ = coefficient_loss(logp, torch.ones(3, dtype=F64), mask)
    per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # [3, 4]
    expected = torch.stack([per_token[i][mask[i]].mean() for i in range(3)]).mean()
    assert float(loss) == pytest.approx(float(expected), abs=1e-12)


def test_coefficient_loss_with_kept_rows_normaliser_splits_into_micro_batches():
    logp = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(4, 3, dtype=torch.bool)
    norm = LossNormalizers.from_mask(mask)
    whole, _ = coefficient_loss(logp, torch.ones(4, dtype=F64), mask, aggregation="token_mean", normalizers=norm)
    halves = [coefficient_loss(logp[s], torch.ones(2, dtype=F64), mask[s], aggregation="token_mean", normalizers=norm)[0]
              for s in (slice(0, 2), slice(2, 4))]
    assert float(sum(halves)) == pytest.approx(float(whole), abs=1e-12)


def test_estimators_say_whether_they_zero_equal_groups():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0], dtype=F64)  # group 0 all correct
    reinforce = outcome_advantages(rewards, 3, estimator="reinforce")
    assert reinforce.values.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]  # online RFT's I(o): kept when all correct
    assert outcome_advantages(rewards, 3, estimator="group_norm").values[:3].tolist() == [0.0, 0.0, 0.0]
    assert not OUTCOME_ESTIMATORS.get("reinforce").zeroes_equal_groups and not OUTCOME_ESTIMATORS.get("reinforce").needs_group
    assert all(OUTCOME_ESTIMATORS.get(n).zeroes_equal_groups for n in ("group_norm", "group_center", "batch_norm", "rloo"))
    assert outcome_advantages(torch.tensor([2.0, float("nan")], dtype=F64), 1, estimator="reinforce").values.tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="group_size must be an int >= 2"):
        outcome_advantages(torch.tensor([1.0, 0.0]), 1, estimator="group_norm")


@pytest.mark.parametrize("name", POLICY_LOSSES.names())
def test_every_policy_loss_has_the_one_signature_and_is_exact_at_ratio_one(name):
    """At rho = 1 every registered surrogate is -A per token, with gradient -A (nothing binds)."""
    log_ratio = torch.zeros(2, 3, dtype=F64, requires_grad=True)
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]], dtype=F64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, ratio = POLICY_LOSSES.get(name)(log_ratio, advantages, mask, ClipRange(0.2, 0.2, 3.0), 20.0)
    assert torch.allclose(loss, -advantages) and torch.allclose(ratio, torch.ones_like(ratio))
    loss.sum().backward()
    scale = torch.tensor([[1.0], [1.0]], dtype=F64) if name != "sequence_clip" else torch.full((2, 1), 1.0, dtype=F64)
    assert torch.allclose(log_ratio.grad, -advantages * scale)


def test_dpo_loss_with_the_batch_pair_count_adds_up_over_micro_batches():
    g = torch.Generator().manual_seed(3)
    c, r, rc, rr = (torch.randn(4, 5, dtype=F64, generator=g) for _ in range(4))
    cm = torch.rand(4, 5, generator=g) > 0.3
    rm = torch.rand(4, 5, generator=g) > 0.3
    whole, stats = dpo_loss(c, r, rc, rr, cm, rm, beta=0.2)
    parts = [dpo_loss(c[s], r[s], rc[s], rr[s], cm[s], rm[s], beta=0.2, num_pairs=4) for s in (slice(0, 1), slice(1, 4))]
    assert float(sum(p[0] for p in parts)) == pytest.approx(float(whole), abs=1e-12)
    assert float(sum(p[1]["margin"] for p in parts)) == pytest.approx(float(stats["margin"]), abs=1e-12)


def test_gae_refuses_masks_that_are_not_a_prefix():
    with pytest.raises(ValueError, match=r"mask must be a prefix of each row \(True tokens, then padding\); row 1 has a gap"):
        gae_advantages(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([[True, True, False], [True, False, True]]))


def test_masked_whiten_and_explained_variance_by_hand():
    values = torch.tensor([[1.0, 2.0, 99.0], [3.0, 6.0, -5.0]], dtype=F64)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    # entries 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3
    std = math.sqrt(14 / 3 + 1e-8)
    expected = torch.tensor([[-2 / std, -1 / std, 0.0], [0.0, 3 / std, 0.0]], dtype=F64)
    assert torch.allclose(masked_whiten(values, mask), expected, atol=1e-12)
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    all_true = torch.ones(4, dtype=torch.bool)
    assert float(explained_variance(targets, targets, all_true)) == 1.0
    assert float(explained_variance(torch.full((4,), 2.5, dtype=F64), targets, all_true)) == pytest.approx(0.0)
    # residual [0.5, -0.5, 0.5, -0.5]: variance 0.25 against 1.25
    assert float(explained_variance(targets + torch.tensor([-0.5, 0.5, -0.5, 0.5], dtype=F64), targets, all_true)) == pytest.approx(0.8)
    assert math.isnan(float(explained_variance(targets, torch.ones(4, dtype=F64), all_true)))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=12))
def test_whitened_values_have_mean_zero_and_unit_sample_std(values):
    x = torch.tensor(values, dtype=F64)
    mask = torch.ones_like(x, dtype=torch.bool)
    if float(x.std()) < 0.1:  # the 1e-8 inside the square root matters only for tiny spreads
        return
    white = masked_whiten(x, mask)
    assert abs(float(white.mean())) < 1e-9
    assert float(white.std()) == pytest.approx(1.0, rel=1e-5)
