"""cohort's losses against the formulas of the peers that compute the same thing, on the same inputs.

The peers' formulas are restated here from their sources (not imported: verl needs Ray, omegaconf
and its own stack; TRL's DPO loss is inlined in ``DPOTrainer._compute_loss``), each with the file
it comes from. Conventions that differ are pinned by a test of their own:

* verl ``compute_gae_advantage_return`` (verl/trainer/ppo/core_algos.py, commit b178a3c) whitens the
  advantages inside GAE; cohort's ``gae_advantages`` does not, and the PPO method whitens after
  (``ppo.whiten_advantages``). The returns are the same.
* verl ``compute_policy_loss_vanilla`` always applies dual-clip (``clip_ratio_c``, default 3) to
  negative advantages; that is cohort's ``loss="dual_clip"``, while cohort's ``"clip"`` is plain PPO.
* verl ``agg_loss("seq-mean-token-mean")`` leaves fully masked sequences out of the mean; cohort's
  ``seq_mean_token_mean`` counts every sequence of the batch (a masked one adds 0), as TRL's ``grpo``.
* verl ``masked_whiten`` leaves (values - mean) * scale at masked positions; cohort puts 0 there.
* The KL value cap (docs/spec.md §10.13): verl ``kl_penalty_forward`` caps only ``low_var_kl`` (k3) at
  ±10; OpenRLHF ``compute_approx_kl`` (openrlhf/models/utils.py, commit 3c3be62) caps k1, k2 and k3.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from cohort.algo import (
    LossNormalizers,
    aggregate,
    clipped_value_loss,
    dpo_loss,
    gae_advantages,
    kl_penalty,
    masked_whiten,
    policy_loss,
)

F64 = torch.float64


def _random_batch(seed: int, rows: int = 5, width: int = 7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=g)
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T] prefixes
    return g, mask


# --- verl, restated -----------------------------------------------------------------------------


def verl_masked_mean(values, mask):
    return (values * mask).sum() / (mask.sum() + 1e-8)


def verl_masked_whiten(values, mask):
    mean = verl_masked_mean(values, mask)
    count = mask.sum()
    variance = verl_masked_mean((values - mean) ** 2, mask) * count / (count - 1)
    return (values - mean) * torch.rsqrt(variance + 1e-8)


def verl_gae(token_rewards, values, mask, gamma, lam):
    """The recursion of verl's compute_gae_advantage_return: masked steps carry the running values."""
    maskf = mask.to(values.dtype)
    next_value = torch.zeros(values.shape[0], dtype=values.dtype)
    running = torch.zeros(values.shape[0], dtype=values.dtype)
    out = []
    for t in reversed(range(values.shape[1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        candidate = delta + gamma * lam * running
        next_value = values[:, t] * maskf[:, t] + (1 - maskf[:, t]) * next_value
        running = candidate * maskf[:, t] + (1 - maskf[:, t]) * running
        out.append(running)
    advantages = torch.stack(out[::-1], dim=1)
    returns = advantages + values
    return verl_masked_whiten(advantages, maskf), returns


def verl_policy_loss_vanilla(old, new, advantages, mask, eps_low, eps_high, clip_ratio_c):
    """verl compute_policy_loss_vanilla with loss_agg_mode token-mean."""
    ratio = torch.exp(torch.clamp(new - old, -20.0, 20.0))
    losses1 = -advantages * ratio
    losses2 = -advantages * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    clipped1 = torch.maximum(losses1, losses2)
    clipped2 = torch.minimum(-advantages * clip_ratio_c, clipped1)
    losses = torch.where(advantages < 0, clipped2, clipped1)
    return (losses * mask).sum() / mask.sum()


def verl_value_loss(predictions, returns, old_values, mask, clip_range):
    """verl compute_value_loss with loss_agg_mode token-mean."""
    clipped = torch.clamp(predictions, old_values - clip_range, old_values + clip_range)
    losses = torch.maximum((predictions - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * (losses * mask).sum() / mask.sum()


def verl_seq_mean_token_mean(values, mask):
    counts = mask.sum(-1)
    per_sequence = (values * mask).sum(-1) / (counts + 1e-8)
    kept = (counts > 0).to(values.dtype)
    return (per_sequence * kept).sum() / kept.sum()


def verl_low_var_kl(logprob, ref_logprob):
    """verl kl_penalty_forward, kl_penalty="low_var_kl" (k3): log-ratio clamped to ±20, value to ±10."""
    kl = torch.clamp(ref_logprob - logprob, min=-20, max=20)
    return torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)


def openrlhf_approx_kl(log_probs, log_probs_base, kl_estimator):
    """OpenRLHF compute_approx_kl: k1 = log p - log p_base, k2 = k1^2 / 2, k3 = exp(-k1) - 1 + k1; all at ±10."""
    log_ratio = log_probs - log_probs_base
    if kl_estimator == "k2":
        log_ratio = log_ratio**2 / 2.0
    elif kl_estimator == "k3":
        log_ratio = (-log_ratio).exp() - 1 + log_ratio
    return log_ratio.clamp(min=-10, max=10)


def _wide_log_probs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs whose differences span |log x| up to ~15, so the cap binds on both sides of k1."""
    g = torch.Generator().manual_seed(seed)
    ref = -5 * torch.rand(64, dtype=F64, generator=g)
    return (ref + 15 * (2 * torch.rand(64, dtype=F64, generator=g) - 1)).requires_grad_(True), ref


@pytest.mark.parametrize("seed", range(3))
def test_capped_k3_is_verls_low_var_kl_value_and_gradient(seed):
    logp, ref = _wide_log_probs(seed)
    ours, theirs = kl_penalty(logp, ref, "k3", value_limit=10.0), verl_low_var_kl(logp, ref)
    assert bool((theirs.detach() == 10).any()) and torch.allclose(ours, theirs, atol=1e-12)
    (our_grad,) = torch.autograd.grad(ours.sum(), logp)
    (their_grad,) = torch.autograd.grad(theirs.sum(), logp)
    assert torch.allclose(our_grad, their_grad, atol=1e-12)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_capped_estimators_are_openrlhfs_compute_approx_kl(estimator):
    logp, ref = _wide_log_probs(7)
    ours, theirs = kl_penalty(logp, ref, estimator, value_limit=10.0), openrlhf_approx_kl(logp, ref, estimator)
    assert bool((theirs.detach().abs() == 10).any()) and torch.allclose(ours, theirs, atol=1e-12)
    (our_grad,) = torch.autograd.grad(ours.sum(), logp)
    (their_grad,) = torch.autograd.grad(theirs.sum(), logp)
    assert torch.allclose(our_grad, their_grad, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_gae_returns_match_verl_and_whitened_advantages_too(seed):
    g, mask = _random_batch(seed)
    rewards = torch.randn(mask.shape, dtype=F64, generator=g)
    values = torch.randn(mask.shape, dtype=F64, generator=g)
    ours, our_returns = gae_advantages(rewards, values, mask, gamma=0.99, lam=0.9)
    theirs, their_returns = verl_gae(rewards, values, mask, 0.99, 0.9)
    assert torch.allclose(our_returns[mask], their_returns[mask], atol=1e-12)
    assert torch.allclose(masked_whiten(ours, mask)[mask], theirs[mask], atol=1e-7)  # verl's 1e-8 in the mean's divisor


@pytest.mark.parametrize("seed", range(5))
def test_dual_clip_policy_loss_is_verls_vanilla_loss(seed):
    g, mask = _random_batch(seed)
    old = torch.randn(mask.shape, dtype=F64, generator=g)
    new = (old + 0.5 * torch.randn(mask.shape, dtype=F64, generator=g)).requires_grad_(True)
    advantages = torch.randn(mask.shape, dtype=F64, generator=g)
    ours, _ = policy_loss(new, old, advantages, mask, loss="dual_clip", dual_clip=3.0, eps_low=0.2, eps_high=0.28,
                          aggregation="token_mean")
    theirs = verl_policy_loss_vanilla(old, new, advantages, mask, 0.2, 0.28, 3.0)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), abs=1e-12)
    (our_grad,) = torch.autograd.grad(ours, new)
    (their_grad,) = torch.autograd.grad(theirs, new)
    assert torch.allclose(our_grad, their_grad, atol=1e-12)


def test_plain_clip_is_verls_vanilla_loss_without_the_dual_bound():
    g, mask = _random_batch(11)
    old = torch.randn(mask.shape, dtype=F64, generator=g)
    new = old + torch.randn(mask.shape, dtype=F64, generator=g)  # large ratios, so dual-clip binds somewhere
    advantages = torch.randn(mask.shape, dtype=F64, generator=g)
    ours, _ = policy_loss(new, old, advantages, mask, aggregation="token_mean")
    assert float(ours.detach()) == pytest.approx(float(verl_policy_loss_vanilla(old, new, advantages, mask, 0.2, 0.2, 1e30)), abs=1e-12)
    assert float(ours.detach()) != pytest.approx(float(verl_policy_loss_vanilla(old, new, advantages, mask, 0.2, 0.2, 3.0)), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_clipped_value_loss_matches_verl(seed):
    g, mask = _random_batch(seed)
    predictions = torch.randn(mask.shape, dtype=F64, generator=g).requires_grad_(True)
    returns = torch.randn(mask.shape, dtype=F64, generator=g)
    old_values = predictions.detach() + 0.3 * torch.randn(mask.shape, dtype=F64, generator=g)
    ours, _ = clipped_value_loss(predictions, old_values, returns, mask, clip_range=0.2)
    theirs = verl_value_loss(predictions, returns, old_values, mask, 0.2)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), abs=1e-12)
    assert torch.allclose(torch.autograd.grad(ours, predictions)[0], torch.autograd.grad(theirs, predictions)[0], atol=1e-12)


def test_seq_mean_token_mean_equals_verls_unless_a_sequence_is_fully_masked():
    g, mask = _random_batch(4)
    values = torch.randn(mask.shape, dtype=F64, generator=g)
    assert float(aggregate(values, mask, "seq_mean_token_mean")) == pytest.approx(float(verl_seq_mean_token_mean(values, mask)), abs=1e-9)
    mask[0] = False  # cohort counts the empty sequence in 1/B (TRL grpo, docs/spec.md §10.6); verl leaves it out
    rows = mask.shape[0]
    assert float(aggregate(values, mask, "seq_mean_token_mean", LossNormalizers.from_mask(mask))) == pytest.approx(
        float(verl_seq_mean_token_mean(values, mask)) * (rows - 1) / rows, abs=1e-9)


# --- TRL's DPO, restated --------------------------------------------------------------------------


def test_trl_still_computes_dpo_as_restated_here():
    """Keeps the restatement below honest against the TRL this project installs for its benchmark."""
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    source = inspect.getsource(trl_dpo.DPOTrainer._compute_loss)
    assert "chosen_logratios = chosen_logps - ref_chosen_logps" in source
    assert "per_sequence_loss = -F.logsigmoid(self.beta * delta_score)" in source


def trl_sigmoid_dpo(chosen, rejected, ref_chosen, ref_rejected, beta):
    """TRL DPOTrainer, loss_type='sigmoid', f_divergence reverse_kl, sequence log-probs summed over tokens."""
    delta = (chosen - ref_chosen) - (rejected - ref_rejected)
    return (-torch.nn.functional.logsigmoid(beta * delta)).mean(), beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)


@pytest.mark.parametrize("seed", range(4))
def test_dpo_loss_and_rewards_match_trl_sigmoid_loss(seed):
    g = torch.Generator().manual_seed(seed)
    per_token = [torch.randn(6, 5, dtype=F64, generator=g) for _ in range(4)]
    cm, rm = torch.rand(6, 5, generator=g) > 0.2, torch.rand(6, 5, generator=g) > 0.2
    cm[:, 0] = rm[:, 0] = True
    c = per_token[0].requires_grad_(True)
    ours, stats = dpo_loss(c, per_token[1], per_token[2], per_token[3], cm, rm, beta=0.1)
    sums = [(t * m).sum(-1) for t, m in zip(per_token, (cm, rm, cm, rm))]
    theirs, chosen_reward, rejected_reward = trl_sigmoid_dpo(*sums, beta=0.1)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), abs=1e-12)
    assert float(stats["reward_chosen"]) == pytest.approx(float(chosen_reward.mean().detach()), abs=1e-12)
    assert float(stats["reward_rejected"]) == pytest.approx(float(rejected_reward.mean().detach()), abs=1e-12)
    assert torch.allclose(torch.autograd.grad(ours, c)[0], torch.autograd.grad(theirs, c)[0], atol=1e-12)
