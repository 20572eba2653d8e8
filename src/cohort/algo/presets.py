"""Named bundles of the algorithm knobs (spec §8.5): each preset is data, not code.

``loss`` holds the knobs of :func:`cohort.algo.losses.policy_loss` and the advantage estimator;
``run_defaults`` holds recommended settings outside the loss as dotted config keys (for example
``rollout.group_size``), which the config layer applies as defaults under the user's own values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class LossKnobs:
    """Everything that shapes advantages and the policy loss."""

    advantage: str = "group_norm"  # outcome estimator name, or "process"
    std_ddof: int = 1
    adv_eps: float = 1e-4
    aggregation: str = "seq_mean_token_mean"
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = None
    beta: float = 0.0
    kl_estimator: str = "k3"
    ratio_level: str = "token"
    control_weight: float = 1.0


@dataclass(frozen=True)
class Preset:
    """A named algorithm: the loss knobs plus recommended run settings (dotted config keys)."""

    name: str
    summary: str
    loss: LossKnobs
    run_defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_defaults", MappingProxyType(dict(self.run_defaults)))


_PRESETS = [
    Preset(
        "grpo",
        "GRPO as in DeepSeekMath Eq. 3 (group-normalised advantages, per-sequence token mean, k3 KL "
        "with beta 0.04), without the paper's large-scale run settings",
        LossKnobs(beta=0.04),
    ),
    Preset(
        "deepseekmath",
        "GRPO with DeepSeekMath's published settings: G=64, beta=0.04, mu=1, lr 1e-6",
        LossKnobs(beta=0.04),
        {"rollout.group_size": 64, "algorithm.mu": 1, "optim.lr": 1e-6},
    ),
    Preset(
        "r1_zero",
        "DeepSeek-R1-Zero: GRPO with beta=0.001, G=16, temperature 1, reference reset every 400 steps",
        LossKnobs(beta=0.001),
        {
            "rollout.group_size": 16,
            "rollout.temperature": 1.0,
            "algorithm.ref_reset_every": 400,
            "optim.lr": 3e-6,
        },
    ),
    Preset(
        "dr_grpo",
        "Dr. GRPO: centred advantages (no std), token sums over a constant L_max, no KL",
        LossKnobs(advantage="group_center", aggregation="seq_sum_const", beta=0.0),
        {
            "rollout.group_size": 8,
            "rollout.temperature": 1.0,
            "optim.lr": 1e-6,
            "optim.betas": (0.9, 0.95),
            "optim.weight_decay": 0.0,
            "optim.max_grad_norm": 1.0,
        },
    ),
    Preset(
        "dapo",
        "DAPO: clip-higher (0.2/0.28), token-mean loss, no KL, dynamic sampling, soft overlong punishment",
        LossKnobs(aggregation="token_mean", eps_low=0.2, eps_high=0.28, beta=0.0),
        {
            "rollout.group_size": 16,
            "rollout.temperature": 1.0,
            "algorithm.dynamic_sampling": True,
            "algorithm.overlong_buffer": 0.2,
        },
    ),
    Preset(
        "gspo",
        "GSPO: sequence-level (length-normalised) importance ratio with a tight clip, no KL",
        LossKnobs(ratio_level="sequence", eps_low=3e-4, eps_high=4e-4, beta=0.0),
    ),
    Preset(
        "rloo",
        "RLOO: leave-one-out baseline (r_i minus the mean of the other samples), no std, no KL",
        LossKnobs(advantage="rloo", aggregation="token_mean", beta=0.0),
    ),
    Preset(
        "degrpo",
        "DeGRPO (Thinkless): centred advantages, control token weighted apart (alpha=0.001), k3 KL 0.001",
        LossKnobs(advantage="group_center", aggregation="decoupled", control_weight=0.001, beta=0.001),
    ),
    Preset(
        "trl_parity",
        "TRL GRPOTrainer defaults (sample std + 1e-4, token-mean loss, beta 0) for side-by-side comparisons",
        LossKnobs(aggregation="token_mean", beta=0.0),
    ),
]

PRESETS: Mapping[str, Preset] = MappingProxyType({preset.name: preset for preset in _PRESETS})


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError lists the available ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm preset {name!r}; allowed: {', '.join(sorted(PRESETS))}") from None
