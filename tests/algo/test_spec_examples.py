"""The worked numbers of docs/spec.md §11 (Examples A-E) and §10.7, reproduced to 1e-8 with gradients."""

from __future__ import annotations

import math

import pytest
import torch

from cohort.algo import (
    kl_penalty,
    outcome_advantages,
    pass_at_k,
    policy_loss,
    process_advantages,
)

F64 = torch.float64
TOL = 1e-8

RHO = [[1.0, 1.1, 1.3], [0.9, 0.7, 1.25], [0.75, 1.0, 1.05], [1.0, 1.0, 1.0]]
X = [[1.0, 0.9, 1.2], [1.0, 1.0, 0.8], [1.1, 1.0, 1.0], [1.0, 0.5, 2.0]]
REWARDS = [1.0, 0.0, 1.0, 0.0]


def close(actual: torch.Tensor, expected) -> bool:
    return torch.allclose(actual.to(F64), torch.as_tensor(expected, dtype=F64), rtol=0.0, atol=TOL)


def logprob_inputs(rho, x, base: float = -1.3):
    """l_theta (a leaf), l_old = l_theta - log rho, l_ref = l_theta + log x, as the spec prescribes."""
    rho_t = torch.tensor(rho, dtype=F64)
    x_t = torch.tensor(x, dtype=F64)
    logp = torch.full(rho_t.shape, base, dtype=F64, requires_grad=True)
    return logp, logp.detach() - rho_t.log(), logp.detach() + x_t.log()


def run_loss(rho, x, advantages, mask, beta, **kwargs):
    logp, old, ref = logprob_inputs(rho, x)
    loss, stats = policy_loss(logp, old, advantages, mask, ref_logprobs=ref, beta=beta, **kwargs)
    loss.backward()
    return loss, logp.grad, stats


# --- Example A ------------------------------------------------------------------------------------


class TestExampleA:
    mask = torch.ones(4, 3, dtype=torch.bool)

    def rewards(self):
        return torch.tensor(REWARDS, dtype=F64)

    def test_advantages_every_std_variant(self):
        r = self.rewards()
        assert close(outcome_advantages(r, 4, ddof=0, eps=0.0).values, [1, -1, 1, -1])
        s = 0.8660254038
        assert close(outcome_advantages(r, 4, ddof=1, eps=0.0).values, [s, -s, s, -s])
        t = 0.8658754298
        assert close(outcome_advantages(r, 4, ddof=1, eps=1e-4).values, [t, -t, t, -t])
        assert close(outcome_advantages(r, 4, estimator="group_center").values, [0.5, -0.5, 0.5, -0.5])

    def test_k3_values(self):
        x = torch.tensor([1.0, 0.9, 1.2, 0.8, 1.1, 0.5, 2.0], dtype=F64)
        k3 = kl_penalty(torch.zeros_like(x), x.log(), "k3")
        expected = [0.0, 0.0053605157, 0.0176784432, 0.0231435513, 0.0046898202, 0.1931471806, 0.3068528194]
        assert close(k3, expected)
        assert abs(float(k3[5] + k3[6]) - 0.5) < 1e-12

    @pytest.mark.parametrize(
        "ddof, eps, beta, expected",
        [
            (0, 0.0, 0.04, -0.0106637589),
            (0, 0.0, 0.0, -0.0125),
            (1, 0.0, 0.04, -0.0089890764),
            (1, 1e-4, 0.04, -0.0089872018),
        ],
    )
    @pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean"])
    def test_grpo_loss(self, ddof, eps, beta, expected, aggregation):
        adv = outcome_advantages(self.rewards(), 4, ddof=ddof, eps=eps).values
        loss, _, _ = run_loss(RHO, X, adv, self.mask, beta, aggregation=aggregation)
        assert abs(float(loss.detach()) - expected) < TOL

    @pytest.mark.parametrize("max_length, expected", [(3, -0.0044137589), (4, -0.0033103192)])
    def test_dr_grpo_loss(self, max_length, expected):
        adv = outcome_advantages(self.rewards(), 4, estimator="group_center").values
        loss, _, _ = run_loss(RHO, X, adv, self.mask, 0.04, aggregation="seq_sum_const", max_length=max_length)
        assert abs(float(loss.detach()) - expected) < TOL

    @pytest.mark.parametrize(
        "ddof, beta, expected",
        [
            (
                0,
                0.04,
                [
                    [-0.0833333333, -0.0913333333, -0.0006666667],
                    [0.0750000000, 0.0000000000, 0.1048333333],
                    [-0.0628333333, -0.0833333333, -0.0875000000],
                    [0.0833333333, 0.0850000000, 0.0800000000],
                ],
            ),
            (
                0,
                0.0,
                [
                    [-0.0833333333, -0.0916666667, 0.0],
                    [0.075, 0.0, 0.1041666667],
                    [-0.0625, -0.0833333333, -0.0875],
                    [0.0833333333, 0.0833333333, 0.0833333333],
                ],
            ),
            (
                1,
                0.04,
                [
                    [-0.0721687836, -0.0790523287, -0.0006666667],
                    [0.0649519053, 0.0, 0.0908776462],
                    [-0.0544599211, -0.0721687836, -0.0757772228],
                    [0.0721687836, 0.0738354503, 0.0688354503],
                ],
            ),
        ],
    )
    def test_gradients(self, ddof, beta, expected):
        adv = outcome_advantages(self.rewards(), 4, ddof=ddof, eps=0.0).values
        _, grad, _ = run_loss(RHO, X, adv, self.mask, beta)
        assert close(grad, expected)

    def test_clip_fraction_is_two_of_twelve(self):
        adv = outcome_advantages(self.rewards(), 4, ddof=0, eps=0.0).values
        _, _, stats = run_loss(RHO, X, adv, self.mask, 0.04)
        assert close(stats["clip_frac_low"], 1 / 12)  # token (2,2): A<0, rho=0.7
        assert close(stats["clip_frac_high"], 1 / 12)  # token (1,3): A>0, rho=1.3
        assert close(stats["kl"], 0.0459060275)


# --- Example B: unequal lengths, garbage in the padding -------------------------------------------

LENGTHS = [3, 1, 2, 3]
MASK_B = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
PADDED = [(1, 1), (1, 2), (2, 2)]


def garbage_inputs(rho_garbage: float, x_garbage: float):
    rho = [row[:] for row in RHO]
    x = [row[:] for row in X]
    for i, t in PADDED:
        rho[i][t] = rho_garbage
        x[i][t] = x_garbage
    return rho, x


EXAMPLE_B = {
    # aggregation: (advantage kwargs, extra loss kwargs, loss beta=0.04, loss beta=0, gradient beta=0.04)
    "seq_mean_token_mean": (
        {"ddof": 0, "eps": 0.0},
        {},
        -0.0169830877,
        -0.01875,
        [[-0.0833333333, -0.0913333333, -0.0006666667], [0.225, 0, 0], [-0.09425, -0.125, 0], [0.0833333333, 0.085, 0.08]],
    ),
    "token_mean": (
        {"ddof": 0, "eps": 0.0},
        {},
        -0.1254323165,
        -0.1277777778,
        [
            [-0.1111111111, -0.1217777778, -0.0008888889],
            [0.1, 0, 0],
            [-0.0837777778, -0.1111111111, 0],
            [0.1111111111, 0.1133333333, 0.1066666667],
        ],
    ),
    "seq_sum_const": (
        {"estimator": "group_center"},
        {"max_length": 3},
        -0.0461575707,
        -0.0479166667,
        [
            [-0.0416666667, -0.0455, -0.0006666667],
            [0.0375, 0, 0],
            [-0.0315833333, -0.0416666667, 0],
            [0.0416666667, 0.0433333333, 0.0383333333],
        ],
    ),
}


class TestExampleB:
    @pytest.mark.parametrize("aggregation", sorted(EXAMPLE_B))
    @pytest.mark.parametrize("beta_index", [0, 1])
    def test_loss_with_spec_garbage(self, aggregation, beta_index):
        adv_kwargs, loss_kwargs, loss_beta, loss_no_beta, _ = EXAMPLE_B[aggregation]
        adv = outcome_advantages(torch.tensor(REWARDS, dtype=F64), 4, **adv_kwargs).values
        beta, expected = [(0.04, loss_beta), (0.0, loss_no_beta)][beta_index]
        rho, x = garbage_inputs(5.0, 100.0)
        loss, _, _ = run_loss(rho, x, adv, MASK_B, beta, aggregation=aggregation, **loss_kwargs)
        assert abs(float(loss.detach()) - expected) < TOL

    @pytest.mark.parametrize("aggregation", sorted(EXAMPLE_B))
    def test_gradients_zero_in_padding(self, aggregation):
        adv_kwargs, loss_kwargs, _, _, expected_grad = EXAMPLE_B[aggregation]
        adv = outcome_advantages(torch.tensor(REWARDS, dtype=F64), 4, **adv_kwargs).values
        rho, x = garbage_inputs(5.0, 100.0)
        _, grad, _ = run_loss(rho, x, adv, MASK_B, 0.04, aggregation=aggregation, **loss_kwargs)
        assert close(grad, expected_grad)
        for i, t in PADDED:
            assert grad[i, t] == 0.0

    @pytest.mark.parametrize("aggregation", sorted(EXAMPLE_B))
    @pytest.mark.parametrize("garbage", [float("nan"), float("inf"), -float("inf")])
    def test_nan_and_inf_in_padding_never_leak(self, aggregation, garbage):
        """NaN/inf in every padded input (log-probs, old, ref, advantages) leave loss and gradient intact."""
        adv_kwargs, loss_kwargs, loss_beta, _, expected_grad = EXAMPLE_B[aggregation]
        adv = outcome_advantages(torch.tensor(REWARDS, dtype=F64), 4, **adv_kwargs).values
        token_adv = adv.unsqueeze(1).expand(4, 3).clone()
        rho, x = garbage_inputs(1.0, 1.0)
        logp, old, ref = logprob_inputs(rho, x)
        with torch.no_grad():
            for i, t in PADDED:
                logp[i, t] = garbage
                old[i, t] = garbage
                ref[i, t] = -garbage if garbage == garbage else garbage
                token_adv[i, t] = garbage
        loss, _ = policy_loss(
            logp, old, token_adv, MASK_B, ref_logprobs=ref, beta=0.04, aggregation=aggregation, **loss_kwargs
        )
        loss.backward()
        assert abs(float(loss.detach()) - loss_beta) < TOL
        assert torch.isfinite(logp.grad).all()
        assert close(logp.grad, expected_grad)


# --- Example C: process supervision ---------------------------------------------------------------


class TestExampleC:
    def advantages(self, ddof):
        step_rewards = torch.tensor([[0.9, 0.3], [0.2, 0.6]], dtype=F64)
        step_ends = torch.tensor([[2, 4], [1, 3]])
        step_mask = torch.ones(2, 2, dtype=torch.bool)
        lengths = torch.tensor([4, 4])
        return process_advantages(step_rewards, step_ends, step_mask, lengths, 4, 2, ddof=ddof, eps=0.0)

    def test_sample_std(self):
        a, b = 0.6324555320, 0.3162277660
        result = self.advantages(ddof=1)
        assert close(result.values, [[a, a, -a, -a], [-a, b, b, 0.0]])
        assert result.valid.all()
        assert result.values[1, 3] == 0.0  # after the last step end: exactly zero

    def test_population_std(self):
        a, b = 0.7302967433, 0.3651483717
        assert close(self.advantages(ddof=0).values, [[a, a, -a, -a], [-a, b, b, 0.0]])


class TestExampleCCreditForms:
    """§4.1 / §11.3: Example C under PURE's min form (less the group's mean whole-completion minimum),
    and with the outcome mixed into the last step."""

    def advantages(self, ddof, **kwargs):
        step_rewards = torch.tensor([[0.9, 0.3], [0.2, 0.6]], dtype=F64)
        ends, mask, lengths = torch.tensor([[2, 4], [1, 3]]), torch.ones(2, 2, dtype=torch.bool), torch.tensor([4, 4])
        return process_advantages(step_rewards, ends, mask, lengths, 4, 2, ddof=ddof, eps=0.0, **kwargs)

    @pytest.mark.parametrize("ddof, d, e", [(1, 0.1581138830, 1.1067971811), (0, 0.1825741858, 1.2780193008)])
    def test_min_form(self, ddof, d, e):
        # sample std: minima o1 (-0.6325, -0.6325), o2 (-0.9487, 0.3162); baseline (-0.6325 - 0.9487) / 2 = -0.7906
        assert close(self.advantages(ddof, credit="min").values, [[d, d, d, d], [-d, e, e, 0.0]])

    def test_outcome_mixed_in(self):
        # outcome rewards [1, 0] x 0.5: GRPO's outcome advantage (sample std 0.7071) +-0.7071 x 0.5 = +-0.3535533906,
        # added to every token of the completion (o2's token 4 too, after its last step)
        outcome = {"outcome_rewards": torch.tensor([1.0, 0.0], dtype=F64), "outcome_weight": 0.5}
        a, b, c, d, e, o = 0.6324555320, 0.3162277660, 0.9486832981, 0.1581138830, 1.1067971811, 0.3535533906
        assert close(self.advantages(1, credit="sum", **outcome).values, [[a + o, a + o, -a + o, -a + o], [-a - o, b - o, b - o, -o]])
        assert close(self.advantages(1, credit="min", **outcome).values, [[d + o] * 4, [-d - o, e - o, e - o, -o]])
        assert c > 0  # (o2's first-step minimum, used in the baseline above)

    def test_min_form_gradient(self):
        """At rho = 1 and beta = 0 the seq_mean_token_mean gradient is -A / (G |o|) = -A / 8."""
        advantages = self.advantages(1, credit="min").values
        logp = torch.full((2, 4), -1.3, dtype=F64, requires_grad=True)
        loss, _ = policy_loss(logp, logp.detach(), advantages, torch.ones(2, 4, dtype=torch.bool), beta=0.0)
        loss.backward()
        d, e = 0.1581138830, 1.1067971811
        assert close(loss.detach(), -((4 * d) / 4 + (-d + 2 * e) / 4) / 2)
        assert close(logp.grad, [[-d / 8] * 4, [d / 8, -e / 8, -e / 8, 0.0]])


# --- Example D: the float trap of zero-variance groups --------------------------------------------


@pytest.mark.parametrize("rewards", [[0.1, 0.1, 0.1], [0.7, 0.7, 0.7], [1.0, 1.0, 1.0, 1.0]])
@pytest.mark.parametrize("estimator", ["group_norm", "group_center", "batch_norm", "rloo"])
@pytest.mark.parametrize("ddof, eps", [(1, 0.0), (1, 1e-4), (0, 0.0)])
def test_example_d_zero_variance_gives_exact_zero(rewards, estimator, ddof, eps):
    r = torch.tensor(rewards, dtype=F64)
    naive = (r - r.mean()) / r.std()
    if rewards[0] != 1.0:
        assert naive.abs().max() > 0.8  # the trap is real: ~±0.8165 from rounding noise alone
    result = outcome_advantages(r, len(rewards), estimator=estimator, ddof=ddof, eps=eps)
    assert torch.equal(result.values, torch.zeros_like(r))


# --- Example E: pass@k ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (10, 3, 1, 0.3),
        (10, 3, 5, 0.9166666667),
        (10, 3, 8, 1.0),
        (10, 0, 5, 0.0),
        (64, 1, 8, 0.125),
        (4, 2, 2, 0.8333333333),
        (20, 5, 10, 0.9837461300),
    ],
)
def test_example_e_pass_at_k(n, c, k, expected):
    value = pass_at_k(torch.tensor([n]), torch.tensor([c]), k)
    assert abs(float(value[0]) - expected) < TOL
    exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert abs(float(value[0]) - exact) < 1e-12


# --- §10.7: NaN rewards ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ddof, expected",
    [
        (1, [1.1547005384, 0.0, -0.5773502692, -0.5773502692]),
        (0, [1.4142135624, 0.0, -0.7071067812, -0.7071067812]),
    ],
)
def test_nan_reward_excluded_from_statistics(ddof, expected):
    result = outcome_advantages(torch.tensor([1.0, float("nan"), 0.0, 0.0], dtype=F64), 4, ddof=ddof, eps=0.0)
    assert close(result.values, expected)
    assert result.valid.tolist() == [True, False, True, True]
