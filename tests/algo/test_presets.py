"""Presets are consistent bundles of registered knobs."""

from __future__ import annotations

import pytest
import torch

from cohort.algo import AGGREGATIONS, KL_ESTIMATORS, OUTCOME_ESTIMATORS, PRESETS, get_preset, policy_loss


def test_spec_presets_exist():
    assert {"deepseekmath", "r1_zero", "dr_grpo", "dapo", "trl_parity", "gspo", "rloo", "degrpo", "grpo"} <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_knobs_are_registered_and_usable(name):
    knobs = get_preset(name).loss
    assert knobs.advantage in OUTCOME_ESTIMATORS or knobs.advantage == "process"
    assert knobs.aggregation in AGGREGATIONS
    assert knobs.kl_estimator in KL_ESTIMATORS
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, _ = policy_loss(
        logp, logp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 3, dtype=torch.bool),
        ref_logprobs=torch.zeros(2, 3), beta=knobs.beta, kl_estimator=knobs.kl_estimator,
        eps_low=knobs.eps_low, eps_high=knobs.eps_high, dual_clip=knobs.dual_clip,
        ratio_level=knobs.ratio_level, aggregation=knobs.aggregation, max_length=3,
        control_weight=knobs.control_weight,
    )
    loss.backward()
    assert torch.isfinite(logp.grad).all()


def test_spec_table_values():
    assert get_preset("deepseekmath").loss.beta == 0.04
    assert get_preset("deepseekmath").run_defaults["rollout.group_size"] == 64
    assert get_preset("dr_grpo").loss.advantage == "group_center"
    assert get_preset("dr_grpo").loss.aggregation == "seq_sum_const"
    assert (get_preset("dapo").loss.eps_low, get_preset("dapo").loss.eps_high) == (0.2, 0.28)
    assert get_preset("dapo").loss.aggregation == "token_mean"
    assert get_preset("r1_zero").run_defaults["algorithm.ref_reset_every"] == 400
    assert get_preset("trl_parity").loss.adv_eps == 1e-4 and get_preset("trl_parity").loss.std_ddof == 1


def test_unknown_preset_lists_the_allowed():
    with pytest.raises(ValueError, match="unknown algorithm preset 'ppo2'; allowed: dapo, deepseekmath"):
        get_preset("ppo2")


def test_presets_are_read_only():
    with pytest.raises(TypeError):
        get_preset("dapo").run_defaults["rollout.group_size"] = 4  # type: ignore[index]
