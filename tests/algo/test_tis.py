"""Truncated importance sampling (TIS) for samples of another engine (vLLM): the weights, worked
numbers, and the weighted GRPO loss against TRL's formula on the same inputs.

TRL (trl/trainer/grpo_trainer.py, ``vllm_importance_sampling_mode="token_truncate"``): the ratio
``exp(old_per_token_logps - sampling_per_token_logps)`` clamped at ``vllm_importance_sampling_clip_max``
multiplies the per-token clipped surrogate, and ``beta * per_token_kl`` is added after it (the KL term
is not weighted); verl's TIS weights ``pg_losses`` the same way. TRL's default mode is
``sequence_mask``; cohort offers the token-level truncation only.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.algo import engine_mismatch, policy_loss, truncated_is_weights

F64 = torch.float64


def test_worked_numbers():
    trainer = torch.tensor([[-1.0, -0.5, -2.0, 0.0]], dtype=F64)
    engine = torch.tensor([[-1.2, -0.5, -1.0, -9.0]], dtype=F64)
    mask = torch.tensor([[True, True, True, False]])
    weights = truncated_is_weights(trainer, engine, mask, cap=2.0)
    expected = torch.tensor([[math.exp(0.2), 1.0, math.exp(-1.0), 1.0]], dtype=F64)  # exp(0.2) = 1.2214027581601699
    assert torch.allclose(weights, expected, atol=1e-12, rtol=0)
    capped = truncated_is_weights(trainer, engine, mask, cap=1.1)
    assert capped[0, 0].item() == pytest.approx(1.1, abs=1e-12)  # min(1.2214, 1.1)
    assert weights.dtype == F64 and not weights.requires_grad
    assert truncated_is_weights(trainer.half(), engine.half(), mask, cap=2.0).dtype == torch.float32


def test_the_mismatch_statistics_worked_numbers():
    trainer = torch.tensor([[-1.0, -0.5, -2.0, 0.0]], dtype=F64)
    engine = torch.tensor([[-1.2, -0.5, -1.0, -9.0]], dtype=F64)
    mask = torch.tensor([[True, True, True, False]])
    none, stats = engine_mismatch(trainer, engine, mask, cap=None)
    assert none is None and set(stats) == {"logprob_diff_mean", "logprob_diff_max"}
    assert stats["logprob_diff_mean"].item() == pytest.approx(1.2 / 3, abs=1e-12)  # |0.2| + 0 + |1.0|, the 9 is masked
    assert stats["logprob_diff_max"].item() == pytest.approx(1.0, abs=1e-12)
    weights, stats = engine_mismatch(trainer, engine, mask, cap=1.1)
    assert torch.equal(weights, truncated_is_weights(trainer, engine, mask, cap=1.1))
    assert stats["tis_weight_mean"].item() == pytest.approx((1.1 + 1.0 + math.exp(-1.0)) / 3, abs=1e-12)
    assert stats["tis_capped_frac"].item() == pytest.approx(1 / 3, abs=1e-12)


def test_bad_cap_and_shapes_are_refused():
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="cap must be > 0"):
        truncated_is_weights(lp, lp, torch.ones(2, 3, dtype=torch.bool), cap=0.0)
    with pytest.raises(ValueError, match="engine_logprobs must have shape"):
        truncated_is_weights(lp, torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool), cap=2.0)


def trl_token_truncate_grpo_loss(new, old, sampling, ref, advantages, mask, eps, beta, cap):
    """TRL's GRPO loss (loss_type="grpo") with vLLM importance sampling, token_truncate, restated."""
    is_ratio = torch.clamp(torch.exp(old - sampling), max=cap)
    coef_1 = torch.exp(new - old)
    coef_2 = torch.clamp(coef_1, 1 - eps, 1 + eps)
    per_token_loss = -torch.min(coef_1 * advantages.unsqueeze(1), coef_2 * advantages.unsqueeze(1))
    per_token_loss = per_token_loss * is_ratio
    per_token_kl = torch.exp(ref - new) - (ref - new) - 1
    per_token_loss = per_token_loss + beta * per_token_kl
    maskf = mask.to(new.dtype)
    return ((per_token_loss * maskf).sum(-1) / maskf.sum(-1).clamp(min=1.0)).mean()


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_weighted_loss_and_gradient_equal_trl_token_truncate(beta):
    g = torch.Generator().manual_seed(3)
    rows, width = 6, 9
    mask = torch.arange(width).unsqueeze(0) < torch.randint(1, width + 1, (rows,), generator=g).unsqueeze(1)
    old = -torch.rand(rows, width, generator=g, dtype=F64) * 3
    sampling = old + 0.3 * torch.randn(rows, width, generator=g, dtype=F64)  # the engine's log-probs
    ref = old + 0.2 * torch.randn(rows, width, generator=g, dtype=F64)
    advantages = torch.randn(rows, generator=g, dtype=F64)
    start = old + 0.15 * torch.randn(rows, width, generator=g, dtype=F64)
    ours_new, trl_new = start.clone().requires_grad_(), start.clone().requires_grad_()
    weights = truncated_is_weights(old, sampling, mask, cap=1.5)
    ours, _ = policy_loss(ours_new, old, advantages, mask, ref_logprobs=ref, beta=beta, kl_clamp=None,
                          token_weights=weights)
    trl = trl_token_truncate_grpo_loss(trl_new, old, sampling, ref, advantages, mask, 0.2, beta, 1.5)
    ours.backward()
    trl.backward()
    assert abs(ours.item() - trl.item()) < 1e-8
    assert torch.allclose(ours_new.grad, trl_new.grad, atol=1e-8, rtol=0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), beta=st.sampled_from([0.0, 0.1]))
def test_unit_weights_change_nothing(seed, beta):
    """Weights of 1 (an engine that agrees with the trainer) give the unweighted loss and gradient."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(4, 5, generator=g) < 0.8
    old = -torch.rand(4, 5, generator=g, dtype=F64)
    ref = old + 0.1 * torch.randn(4, 5, generator=g, dtype=F64)
    advantages = torch.randn(4, generator=g, dtype=F64)
    a = (old + 0.1 * torch.randn(4, 5, generator=g, dtype=F64)).requires_grad_()
    b = a.detach().clone().requires_grad_()
    plain, _ = policy_loss(a, old, advantages, mask, ref_logprobs=ref, beta=beta)
    ones = truncated_is_weights(old, old, mask, cap=2.0)
    weighted, _ = policy_loss(b, old, advantages, mask, ref_logprobs=ref, beta=beta, token_weights=ones)
    plain.backward()
    weighted.backward()
    assert torch.equal(plain.detach(), weighted.detach())
    assert torch.equal(a.grad, b.grad)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cap=st.floats(0.5, 5.0))
def test_weights_never_exceed_the_cap_and_are_one_off_the_mask(seed, cap):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(3, 6, generator=g) < 0.6
    trainer, engine = torch.randn(3, 6, generator=g) * 4, torch.randn(3, 6, generator=g) * 4
    weights = truncated_is_weights(trainer, engine, mask, cap)
    assert bool((weights[mask] <= cap * (1 + 1e-6)).all()) and bool((weights > 0).all())
    assert bool((weights[~mask] == 1).all())
