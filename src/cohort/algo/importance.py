"""Samples drawn by another engine than the trainer's forward (vLLM): how far its sampled-token
log-probs are from the trainer's, and truncated importance sampling (TIS) to correct for it."""

from __future__ import annotations

import math

import torch

from cohort.algo.losses import _at_least_float32, _check_same_shape
from cohort.algo.ops import _check_mask


def truncated_is_weights(
    logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """Truncated importance sampling (TIS) weights for samples drawn by another engine (vLLM):
    ``min(exp(l_trainer - l_engine), cap)`` per token, 1 outside the mask. The sampler's kernels give
    each token a slightly different probability than the trainer's forward; the weight re-targets
    the loss at the trainer's distribution, and the cap bounds the variance (TRL's
    ``token_truncate``, verl's TIS). No gradient.

    logprobs (trainer, pi_old), engine_logprobs: [B, T] float; mask: [B, T] bool -> [B, T] (float32 or wider)
    """
    _check_same_shape(logprobs, engine_logprobs=engine_logprobs)
    _check_mask(logprobs, mask)
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap!r}")
    dtype = _at_least_float32(logprobs, engine_logprobs)
    with torch.no_grad():
        log_ratio = (logprobs.to(dtype) - engine_logprobs.to(dtype)).clamp(max=math.log(cap))  # [B, T]
        return torch.where(mask, log_ratio.exp(), torch.ones_like(log_ratio))  # [B, T]


def engine_mismatch(
    logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor, cap: float | None
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """How far another engine's sampled-token log-probs are from the trainer's, and (``cap`` set)
    the TIS weights that correct for it (:func:`truncated_is_weights`).

    logprobs (trainer, pi_old), engine_logprobs: [B, T]; mask: [B, T] bool, at least one True
    -> (weights [B, T] or None, 0-d stats: ``logprob_diff_mean`` and ``logprob_diff_max`` of the
    absolute gap over the mask; with ``cap`` also ``tis_weight_mean`` and ``tis_capped_frac``)
    """
    _check_same_shape(logprobs, engine_logprobs=engine_logprobs)
    _check_mask(logprobs, mask)
    with torch.no_grad():
        dtype = _at_least_float32(logprobs, engine_logprobs)
        gap = (logprobs.to(dtype) - engine_logprobs.to(dtype)).abs()[mask]  # [n tokens]
        stats = {"logprob_diff_mean": gap.mean(), "logprob_diff_max": gap.max()}
        if cap is None:
            return None, stats
        weights = truncated_is_weights(logprobs, engine_logprobs, mask, cap)  # [B, T]
        stats["tis_weight_mean"] = weights[mask].mean()
        stats["tis_capped_frac"] = (weights[mask] >= cap).to(weights.dtype).mean()
    return weights, stats
