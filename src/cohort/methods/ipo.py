"""IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
Preferences"; docs/spec.md §1.3): DPO's pairs and reference, with a squared loss that regresses the log-ratio
gap h = log-ratio(chosen) - log-ratio(rejected) to 1 / (2 tau) instead of pushing it up without bound
(DPO's sigmoid saturates only as h -> infinity, so on deterministic preferences it overfits):

    loss(h) = (h - 1 / (2 tau))^2,   tau = dpo.beta

Everything else (pairs from the initial policy's samples or a preference file, the frozen reference,
micro-batching that never splits a pair, the metrics) is DPO's. TRL's ``loss_type="ipo"`` computes
the same loss on length-averaged log-probs: set ``dpo.length_normalized=true`` to match it.
"""

from __future__ import annotations

import torch

from cohort import algo
from cohort.methods.dpo import DPO
from cohort.methods.registry import register_method


@algo.PAIR_LOSSES.register("ipo")
def ipo_pair_loss(h: torch.Tensor, tau: float) -> torch.Tensor:
    """(h - 1/(2 tau))^2 per pair. h: [B] -> [B]"""
    return (h - 1.0 / (2.0 * tau)).square()


@register_method
class IPO(DPO):
    name = "ipo"
    summary = "DPO's pairs and reference; squared loss regressing the log-ratio gap to 1/(2 tau) (IPO)"
    pair_loss = "ipo"
