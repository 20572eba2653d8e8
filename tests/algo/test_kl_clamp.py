"""The cap on the per-token KL value (docs/spec.md §10.13): the worked numbers of k3 before and after
the cap, where the cap starts to bind, its zero gradient outside, and its effect inside the GRPO loss."""

from __future__ import annotations

import math

import pytest
import torch

from cohort.algo import kl_penalty, policy_loss

F64 = torch.float64


def k3_and_grad(log_x: float, value_limit: float | None) -> tuple[float, float]:
    """k3 at log x = l_ref - l_theta, and its gradient with respect to l_theta (autograd, float64)."""
    logp = torch.tensor([0.0], dtype=F64, requires_grad=True)
    value = kl_penalty(logp, torch.tensor([log_x], dtype=F64), "k3", value_limit=value_limit)
    value.sum().backward()
    return float(value.detach()), float(logp.grad)


# spec §10.13: log x, k3 and d k3 / d l_theta = 1 - x without the cap, and both with kl_clamp = 10
WORKED = [
    (3.0, 16.0855369232, -19.0855369232, 10.0, 0.0),
    (10.0, 22015.4657948067, -22025.4657948067, 10.0, 0.0),
    (-3.0, 2.0497870684, 0.9502129316, 2.0497870684, 0.9502129316),
    (-10.0, 9.0000453999, 0.9999546001, 9.0000453999, 0.9999546001),
    (0.5, 0.1487212707, -0.6487212707, 0.1487212707, -0.6487212707),
]


@pytest.mark.parametrize(("log_x", "k3", "grad", "capped", "capped_grad"), WORKED)
def test_worked_numbers_before_and_after_the_cap(log_x, k3, grad, capped, capped_grad):
    value, gradient = k3_and_grad(log_x, None)
    assert value == pytest.approx(k3, abs=1e-8) and gradient == pytest.approx(grad, abs=1e-8)
    assert gradient == pytest.approx(1 - math.exp(log_x), abs=1e-10)
    value, gradient = k3_and_grad(log_x, 10.0)
    assert value == pytest.approx(capped, abs=1e-8) and gradient == pytest.approx(capped_grad, abs=1e-8)


@pytest.mark.parametrize(("root", "side"), [(2.6108686381, 1), (-10.9999832980, -1)])
def test_the_cap_of_ten_binds_exactly_where_k3_reaches_ten(root, side):
    """k3 = 10 at log x = 2.6108686381 (pi_theta gives the token 13.6x less than pi_ref) and at
    log x = -10.9999832980 (pi_theta gives it 59,873x more): a hair inside, the cap changes nothing."""
    assert k3_and_grad(root, None)[0] == pytest.approx(10.0, abs=1e-8)
    inside, outside = root - side * 1e-6, root + side * 1e-6
    assert k3_and_grad(inside, 10.0) == k3_and_grad(inside, None)
    value, gradient = k3_and_grad(outside, 10.0)
    assert value == 10.0 and gradient == 0.0


def test_the_cap_holds_every_estimator_on_both_sides():
    logp = torch.zeros(4, dtype=F64)
    ref = torch.tensor([-30.0, -5.0, 5.0, 30.0], dtype=F64)  # log x, clamped to ±20 first
    assert kl_penalty(logp, ref, "k1", value_limit=4.0).tolist() == [4.0, 4.0, -4.0, -4.0]
    assert kl_penalty(logp, ref, "k2", value_limit=4.0).tolist() == [4.0, 4.0, 4.0, 4.0]
    assert kl_penalty(logp, ref, "k3", value_limit=4.0).tolist() == [4.0, 4.0, 4.0, 4.0]
    assert kl_penalty(logp, ref, "k3").tolist()[0] == pytest.approx(19.0 + math.exp(-20.0), abs=1e-12)


def test_in_the_grpo_loss_a_capped_token_adds_the_cap_and_no_gradient():
    """One sequence, two tokens at log x = 3 and 0.5, rho = 1, A = 0, beta = 0.04, per-sequence token
    mean: loss = beta (10 + 0.1487212707) / 2; d loss / d l_theta = [0, beta (1 - e^0.5) / 2]."""
    beta = 0.04
    logp = torch.tensor([[-3.0, -0.5]], dtype=F64, requires_grad=True)
    ref = torch.zeros(1, 2, dtype=F64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    args = dict(ref_logprobs=ref, beta=beta)
    loss, stats = policy_loss(logp, logp.detach(), torch.zeros(1, dtype=F64), mask, kl_clamp=10.0, **args)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(beta * (10.0 + 0.1487212707) / 2, abs=1e-10)
    assert logp.grad.tolist()[0] == pytest.approx([0.0, beta * (1 - math.exp(0.5)) / 2], abs=1e-12)
    assert float(stats["kl"]) == pytest.approx((10.0 + 0.1487212707) / 2, abs=1e-10)
    assert float(stats["kl_clamp_frac"]) == 0.5

    logp.grad = None
    loss, stats = policy_loss(logp, logp.detach(), torch.zeros(1, dtype=F64), mask, **args)  # no cap
    loss.backward()
    assert float(loss.detach()) == pytest.approx(beta * (16.0855369232 + 0.1487212707) / 2, abs=1e-10)
    assert logp.grad.tolist()[0] == pytest.approx([beta * -19.0855369232 / 2, beta * (1 - math.exp(0.5)) / 2], abs=1e-10)
    assert float(stats["kl_clamp_frac"]) == 0.0


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_the_cap_must_be_positive(bad):
    logp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="kl_clamp must be > 0 or None"):
        policy_loss(logp, logp, torch.zeros(1), torch.ones(1, 2, dtype=torch.bool), ref_logprobs=logp, beta=0.1, kl_clamp=bad)
