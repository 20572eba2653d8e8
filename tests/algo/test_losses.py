"""Policy loss, aggregation modes, KL estimators, DPO and value loss: invariants and hand numbers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.algo import (
    AGGREGATIONS,
    LossNormalizers,
    aggregate,
    clipped_value_loss,
    dpo_loss,
    first_token_mask,
    kl_penalty,
    policy_loss,
)

F64 = torch.float64


@st.composite
def padded_batch(draw, min_length: int = 0):
    """Random right-padded batch: log-probs, old log-probs, ref log-probs, advantages, mask."""
    rows = draw(st.integers(1, 6))
    width = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(min_length, width), min_size=rows, max_size=rows))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    logp = -torch.rand(rows, width, generator=g, dtype=F64) * 3
    old = logp + (torch.rand(rows, width, generator=g, dtype=F64) - 0.5) * 0.8
    ref = logp + (torch.rand(rows, width, generator=g, dtype=F64) - 0.5) * 2
    adv = torch.randn(rows, generator=g, dtype=F64)
    return logp, old, ref, adv, mask


@settings(max_examples=200, deadline=None)
@given(log_x=st.floats(-30, 30))
def test_k3_is_non_negative_and_zero_only_at_one(log_x):
    value = kl_penalty(torch.tensor([0.0], dtype=F64), torch.tensor([log_x], dtype=F64), "k3")
    assert float(value) >= 0.0
    if log_x == 0.0:
        assert float(value) == 0.0


def test_kl_estimators_by_hand():
    logp = torch.tensor([-1.0], dtype=F64)
    ref = torch.tensor([-1.5], dtype=F64)  # log x = -0.5
    assert math.isclose(float(kl_penalty(logp, ref, "k1")), 0.5)
    assert math.isclose(float(kl_penalty(logp, ref, "k2")), 0.125)
    assert math.isclose(float(kl_penalty(logp, ref, "k3")), math.exp(-0.5) + 0.5 - 1)


def test_kl_log_ratio_is_clamped_for_minus_infinite_reference():
    value = kl_penalty(torch.tensor([-1.0]), torch.tensor([-float("inf")]), "k3")
    assert torch.isfinite(value).all() and float(value) == pytest.approx(math.exp(-20) + 20 - 1)


@settings(max_examples=150, deadline=None)
@given(batch=padded_batch(min_length=1))
def test_at_ratio_one_without_kl_the_grpo_loss_is_minus_mean_advantage(batch):
    """Spec §2.2: at rho = 1 and beta = 0, seq_mean_token_mean gives -(1/N) sum_i A_i."""
    logp, _, _, adv, mask = batch
    loss, stats = policy_loss(logp, logp.detach(), adv, mask, aggregation="seq_mean_token_mean")
    assert torch.allclose(loss, -adv.mean(), atol=1e-12)
    assert float(stats["clip_frac_low"]) == 0.0 and float(stats["clip_frac_high"]) == 0.0


@settings(max_examples=150, deadline=None)
@given(batch=padded_batch(), aggregation=st.sampled_from(AGGREGATIONS.names()), cut=st.integers(0, 6))
def test_micro_batch_split_gives_the_same_loss_and_gradient(batch, aggregation, cut):
    """Normalisers from the whole batch make sum(micro-batch losses) = whole-batch loss, gradients too."""
    logp, old, ref, adv, mask = batch
    cut = min(cut, logp.shape[0])
    kwargs = dict(beta=0.04, aggregation=aggregation, max_length=6, control_weight=0.3)

    whole_leaf = logp.clone().requires_grad_(True)
    whole, whole_stats = policy_loss(whole_leaf, old, adv, mask, ref_logprobs=ref, **kwargs)
    whole.backward()

    split_leaf = logp.clone().requires_grad_(True)
    norm = LossNormalizers.from_mask(mask)
    total = torch.zeros((), dtype=F64)
    stat_sums = {name: torch.zeros((), dtype=F64) for name in whole_stats}
    for rows in (slice(0, cut), slice(cut, None)):
        if logp[rows].shape[0] == 0:
            continue
        part, part_stats = policy_loss(
            split_leaf[rows], old[rows], adv[rows], mask[rows], ref_logprobs=ref[rows], normalizers=norm, **kwargs
        )
        part.backward()
        total = total + part.detach()
        for name, value in part_stats.items():
            stat_sums[name] += value
    assert torch.allclose(total, whole.detach(), atol=1e-12)
    assert torch.allclose(split_leaf.grad, whole_leaf.grad, atol=1e-12)
    for name in whole_stats:
        assert torch.allclose(stat_sums[name], whole_stats[name], atol=1e-12), name


def test_token_mean_of_an_empty_batch_is_zero_not_nan():
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    for aggregation in AGGREGATIONS.names():
        loss, stats = policy_loss(logp, logp.detach(), torch.ones(2), mask, aggregation=aggregation, max_length=3)
        assert float(loss.detach()) == 0.0, aggregation
        assert all(torch.isfinite(v) for v in stats.values())


def test_empty_sequence_still_counts_in_the_sequence_mean():
    """Spec §10.6: |o_i| = 0 contributes exactly 0 but still counts in 1/G."""
    logp = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True], [False, False]])
    loss, _ = policy_loss(logp, logp.detach(), torch.tensor([1.0, 5.0], dtype=F64), mask)
    assert float(loss.detach()) == pytest.approx(-0.5)


def test_seq_mean_token_sum_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], dtype=F64)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert float(aggregate(values, mask, "seq_mean_token_sum")) == pytest.approx((6 + 4) / 2)


def test_decoupled_weights_the_first_token_apart():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 6.0, 0.0]], dtype=F64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert first_token_mask(mask).tolist() == [[True, False, False], [True, False, False]]
    result = aggregate(values, mask, "decoupled", control_weight=0.5)
    assert float(result) == pytest.approx(0.5 * (1 + 4) / 2 + (2 + 3 + 6) / 3)


def test_seq_sum_const_needs_max_length():
    with pytest.raises(ValueError, match="needs max_length"):
        aggregate(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), "seq_sum_const")


def test_clip_higher_and_dual_clip():
    logp = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    old = -torch.tensor([[math.log(1.25), math.log(1.25), math.log(5.0)]], dtype=F64)  # rho = 1.25, 1.25, 5
    adv = torch.tensor([[1.0, -1.0, -1.0]], dtype=F64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    # eps_high = 0.28 keeps rho = 1.25 unclipped for A > 0; eps_high = 0.2 clips it
    _, stats = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    assert float(stats["clip_frac_high"]) == 0.0
    _, stats = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    assert float(stats["clip_frac_high"]) == pytest.approx(1 / 3)
    # dual clip bounds the negative-advantage token with rho = 5 at 3 * |A|
    loss, _ = policy_loss(logp, old, adv, mask, eps_high=0.28, loss="dual_clip", dual_clip=3.0, aggregation="seq_mean_token_sum")
    assert float(loss.detach()) == pytest.approx(-1.25 + 1.25 + 3.0)
    loss.backward()
    assert logp.grad[0, 2] == 0.0  # the dual-clipped token carries no gradient
    assert float(logp.grad[0, 1]) == pytest.approx(1.25)


def test_sequence_level_ratio_is_gspo():
    """GSPO: s_i = exp(mean_t(l - l_old)); d/dl_t of min(s A, clip(s) A) = s A / |o_i| per token."""
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=F64, requires_grad=True)
    old = logp.detach() - torch.tensor([[0.01, -0.02, 0.04]], dtype=F64)
    mask = torch.tensor([[True, True, False]])
    adv = torch.tensor([2.0], dtype=F64)
    loss, stats = policy_loss(logp, old, adv, mask, loss="sequence_clip", eps_low=0.1, eps_high=0.1)
    seq_ratio = math.exp((0.01 - 0.02) / 2)
    assert float(loss.detach()) == pytest.approx(-seq_ratio * 2.0)
    assert float(stats["ratio_sum"]) == pytest.approx(2 * seq_ratio)  # two tokens in the mask
    loss.backward()
    expected = -seq_ratio * 2.0 / 2
    assert torch.allclose(logp.grad, torch.tensor([[expected, expected, 0.0]], dtype=F64))


def test_log_ratio_is_clamped_so_minus_infinite_old_logprob_stays_finite():
    logp = torch.zeros(1, 2, requires_grad=True)
    old = torch.tensor([[-float("inf"), 0.0]])
    loss, _ = policy_loss(logp, old, torch.tensor([-1.0]), torch.ones(1, 2, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()


class TestPolicyLossBadInput:
    def args(self, **changes):
        base = dict(
            logprobs=torch.zeros(2, 3),
            old_logprobs=torch.zeros(2, 3),
            advantages=torch.zeros(2),
            mask=torch.ones(2, 3, dtype=torch.bool),
        )
        base.update(changes)
        return base

    def test_wrong_advantage_shape(self):
        with pytest.raises(ValueError, match=r"advantages must be \[B\] or \[B, T\] with B=2"):
            policy_loss(**self.args(advantages=torch.zeros(3)))

    def test_wrong_old_shape(self):
        with pytest.raises(ValueError, match=r"old_logprobs must have shape \(2, 3\)"):
            policy_loss(**self.args(old_logprobs=torch.zeros(2, 4)))

    def test_float_mask(self):
        with pytest.raises(ValueError, match="mask must be a bool tensor"):
            policy_loss(**self.args(mask=torch.ones(2, 3)))

    def test_beta_without_reference(self):
        with pytest.raises(ValueError, match="beta > 0 needs ref_logprobs"):
            policy_loss(**self.args(), beta=0.1)

    def test_bad_knobs(self):
        with pytest.raises(ValueError, match="dual_clip must be > 1"):
            policy_loss(**self.args(), loss="dual_clip", dual_clip=0.5)
        with pytest.raises(ValueError, match="is the bound of loss='dual_clip'"):
            policy_loss(**self.args(), dual_clip=3.0)
        with pytest.raises(ValueError, match="policy loss 'dual_clip' needs dual_clip > 1"):
            policy_loss(**self.args(advantages=torch.tensor([1.0, -1.0])), loss="dual_clip")
        with pytest.raises(ValueError, match="eps_low and eps_high must be >= 0"):
            policy_loss(**self.args(), eps_low=-0.1)
        with pytest.raises(ValueError, match="unknown policy loss 'group_clip'; allowed: clip, dual_clip, sequence_clip"):
            policy_loss(**self.args(), loss="group_clip")
        with pytest.raises(ValueError, match="unknown loss aggregation 'mean'; allowed: decoupled"):
            policy_loss(**self.args(), aggregation="mean")
        with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
            policy_loss(**self.args(), ref_logprobs=torch.zeros(2, 3), beta=0.1, kl_estimator="k4")


# --- DPO ------------------------------------------------------------------------------------------


def dpo_inputs():
    chosen = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]], dtype=F64, requires_grad=True)
    rejected = torch.tensor([[-3.0, -1.0], [-2.0, -4.0]], dtype=F64, requires_grad=True)
    ref_chosen = torch.tensor([[-1.5, -2.5, 7.0], [-0.5, -1.0, -1.5]], dtype=F64)
    ref_rejected = torch.tensor([[-2.0, -1.0], [-2.5, -3.0]], dtype=F64)
    chosen_mask = torch.tensor([[True, True, False], [True, True, True]])
    rejected_mask = torch.tensor([[True, True], [True, True]])
    return chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask


@pytest.mark.parametrize("length_normalized", [False, True])
def test_dpo_loss_and_gradient_by_hand(length_normalized):
    chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask = dpo_inputs()
    beta = 0.5
    loss, stats = dpo_loss(
        chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta=beta,
        length_normalized=length_normalized,
    )
    # log-ratios per pair (token sums / means of pi - ref over the mask)
    chosen_terms = [[0.5, 0.5], [0.0, 0.5, 1.0]]
    rejected_terms = [[-1.0, 0.0], [0.5, -1.0]]
    reduce = (lambda v: sum(v) / len(v)) if length_normalized else sum
    z = [beta * (reduce(c) - reduce(r)) for c, r in zip(chosen_terms, rejected_terms)]
    expected = sum(-math.log(1 / (1 + math.exp(-v))) for v in z) / 2
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-12)
    assert float(stats["accuracy"]) == pytest.approx(sum(v > 0 for v in z) / 2)
    loss.backward()
    # docs/spec.md §7: dJ/dl+_t = beta sigma(-z) w_t, so d loss / d l+_t = -(1/B) beta sigma(-z) w_t
    for i, v in enumerate(z):
        coef = beta / (1 + math.exp(v)) / 2
        n_c = len(chosen_terms[i])
        n_r = len(rejected_terms[i])
        w_c = 1 / n_c if length_normalized else 1.0
        w_r = 1 / n_r if length_normalized else 1.0
        assert torch.allclose(chosen.grad[i, :n_c], torch.full((n_c,), -coef * w_c, dtype=F64))
        assert torch.allclose(rejected.grad[i, :n_r], torch.full((n_r,), coef * w_r, dtype=F64))
    assert chosen.grad[0, 2] == 0.0  # masked, despite the wild reference value there


def test_dpo_bad_input():
    chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask = dpo_inputs()
    with pytest.raises(ValueError, match="same number of pairs"):
        dpo_loss(chosen, rejected[:1], ref_chosen, ref_rejected[:1], chosen_mask, rejected_mask[:1])
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta=0.0)


# --- value loss -----------------------------------------------------------------------------------


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0, 5.0]], dtype=F64, requires_grad=True)
    old = torch.tensor([[0.5, 0.0, 0.0]], dtype=F64)
    returns = torch.tensor([[2.0, 1.0, 0.0]], dtype=F64)
    mask = torch.tensor([[True, True, False]])
    loss, stats = clipped_value_loss(values, old, returns, mask, clip_range=0.2)
    # token 0: unclipped (1-2)^2 = 1, clipped V = 0.7 -> (0.7-2)^2 = 1.69 -> max 1.69 (clipped branch)
    # token 1: both (0-1)^2 = 1
    assert float(loss.detach()) == pytest.approx(0.5 * (1.69 + 1.0) / 2)
    assert float(stats["value_clip_frac"]) == pytest.approx(0.5)
    loss.backward()
    assert float(values.grad[0, 0]) == 0.0  # the clipped branch is flat in V
    assert float(values.grad[0, 1]) == pytest.approx(0.5 * 2 * (0 - 1) / 2)
    assert float(values.grad[0, 2]) == 0.0
