"""Presets (docs/spec.md §8.5): named bundles of GRPO-family settings, applied under the user's own values."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from cohort.config.schema import ConfigError


@dataclass(frozen=True)
class Preset:
    """A named GRPO-family algorithm: dotted config settings applied under the user's own values."""

    name: str
    summary: str
    settings: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))


_PRESETS = [
    Preset("grpo", "GRPO as in DeepSeekMath Eq. 3 (group-normalised advantages, per-sequence token mean, k3 KL "
           "with beta 0.04), without the paper's large-scale run settings", {"algorithm.beta": 0.04}),
    Preset("deepseekmath", "GRPO with DeepSeekMath's published settings: G=64, beta=0.04, mu=1, lr 1e-6",
           {"algorithm.beta": 0.04, "rollout.group_size": 64, "algorithm.mu": 1, "optim.lr": 1e-6}),
    Preset("r1_zero", "DeepSeek-R1-Zero: GRPO with beta=0.001, G=16, temperature 1, reference reset every 400 steps",
           {"algorithm.beta": 0.001, "rollout.group_size": 16, "rollout.temperature": 1.0,
            "algorithm.ref_reset_every": 400, "optim.lr": 3e-6}),
    Preset("dr_grpo", "Dr. GRPO: centred advantages (no std), token sums over a constant L_max, no KL",
           {"algorithm.advantage": "group_center", "algorithm.aggregation": "seq_sum_const", "algorithm.beta": 0.0,
            "rollout.group_size": 8, "rollout.temperature": 1.0, "optim.lr": 1e-6, "optim.betas": (0.9, 0.95),
            "optim.weight_decay": 0.0, "optim.max_grad_norm": 1.0}),
    Preset("dapo", "DAPO: clip-higher (0.2/0.28), token-mean loss, no KL, dynamic sampling, soft overlong punishment",
           {"algorithm.aggregation": "token_mean", "algorithm.eps_low": 0.2, "algorithm.eps_high": 0.28,
            "algorithm.beta": 0.0, "rollout.group_size": 16, "rollout.temperature": 1.0,
            "algorithm.dynamic_sampling": True, "algorithm.overlong_buffer": 0.2}),
    Preset("gspo", "GSPO: sequence-level (length-normalised) importance ratio with a tight clip, no KL",
           {"algorithm.policy_loss": "sequence_clip", "algorithm.eps_low": 3e-4, "algorithm.eps_high": 4e-4,
            "algorithm.beta": 0.0}),
    Preset("rloo", "RLOO: leave-one-out baseline (r_i minus the mean of the other samples), no std, no KL",
           {"algorithm.advantage": "rloo", "algorithm.aggregation": "token_mean", "algorithm.beta": 0.0}),
    Preset("degrpo", "DeGRPO (Thinkless): centred advantages, control token weighted apart (alpha=0.001), k3 KL 0.001",
           {"algorithm.advantage": "group_center", "algorithm.aggregation": "decoupled",
            "algorithm.control_weight": 0.001, "algorithm.beta": 0.001}),
    Preset("trl_parity", "TRL GRPOTrainer defaults (sample std + 1e-4, token-mean loss, beta 0, no KL cap) for side-by-side comparisons",
           {"algorithm.aggregation": "token_mean", "algorithm.beta": 0.0, "algorithm.std_ddof": 1, "algorithm.adv_eps": 1e-4,
            "algorithm.kl_clamp": None}),  # TRL caps no KL term
]

PRESETS: Mapping[str, Preset] = MappingProxyType({preset.name: preset for preset in _PRESETS})
"""The algorithm presets by name (``algorithm.preset``; ``cohort presets`` lists them)."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ConfigError lists the available ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"algorithm.preset={name!r} is not allowed: expected one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
