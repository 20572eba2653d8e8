"""Presets are consistent bundles of registered knobs: every one names real keys and registered pieces."""

from __future__ import annotations

import pytest
import torch

from cohort.algo import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    OUTCOME_ESTIMATORS,
    POLICY_LOSSES,
    policy_loss,
)
from cohort.config import PRESETS, ConfigError, build_config, field_types, get_preset
from cohort.methods import check_config


def test_spec_presets_exist():
    assert {"deepseekmath", "r1_zero", "dr_grpo", "dapo", "trl_parity", "gspo", "rloo", "degrpo", "grpo"} <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_settings_are_real_keys_and_registered_and_usable(name):
    assert all(key in field_types() for key in get_preset(name).settings)
    config = build_config({"model.path": "m", "algorithm.preset": name})
    check_config(config)
    knobs = config.algorithm
    assert knobs.advantage in OUTCOME_ESTIMATORS or knobs.advantage == "process"
    assert knobs.aggregation in AGGREGATIONS and knobs.kl_estimator in KL_ESTIMATORS and knobs.policy_loss in POLICY_LOSSES
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, _ = policy_loss(
        logp, logp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 3, dtype=torch.bool),
        ref_logprobs=torch.zeros(2, 3), beta=knobs.beta, kl_estimator=knobs.kl_estimator, loss=knobs.policy_loss,
        eps_low=knobs.eps_low, eps_high=knobs.eps_high, dual_clip=knobs.dual_clip, aggregation=knobs.aggregation,
        max_length=3, control_weight=knobs.control_weight,
    )
    loss.backward()
    assert torch.isfinite(logp.grad).all()


def test_spec_table_values():
    assert get_preset("deepseekmath").settings["algorithm.beta"] == 0.04
    assert get_preset("deepseekmath").settings["rollout.group_size"] == 64
    assert get_preset("dr_grpo").settings["algorithm.advantage"] == "group_center"
    assert get_preset("dr_grpo").settings["algorithm.aggregation"] == "seq_sum_const"
    dapo = get_preset("dapo").settings
    assert (dapo["algorithm.eps_low"], dapo["algorithm.eps_high"], dapo["algorithm.aggregation"]) == (0.2, 0.28, "token_mean")
    assert get_preset("r1_zero").settings["algorithm.ref_reset_every"] == 400
    assert get_preset("gspo").settings["algorithm.policy_loss"] == "sequence_clip"
    assert get_preset("trl_parity").settings["algorithm.adv_eps"] == 1e-4
    assert get_preset("trl_parity").settings["algorithm.kl_clamp"] is None  # TRL caps no KL term


def test_unknown_preset_lists_the_allowed():
    with pytest.raises(ConfigError, match="algorithm.preset='ppo2' is not allowed: expected one of dapo, deepseekmath"):
        get_preset("ppo2")


def test_presets_are_read_only():
    with pytest.raises(TypeError):
        get_preset("dapo").settings["rollout.group_size"] = 4  # type: ignore[index]


def test_a_preset_belongs_to_method_grpo():
    with pytest.raises(ConfigError, match="algorithm.preset belongs to method grpo, not sft"):
        check_config(build_config({"model.path": "m", "algorithm.method": "sft", "algorithm.preset": "dapo"}))
