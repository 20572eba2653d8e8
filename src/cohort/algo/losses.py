"""Policy losses: clipped surrogate, KL estimators, token aggregation, DPO and the value loss.

Everything is minimised (``loss = -J``). Inputs are right-padded ``[B, T]`` tensors with a bool
mask; masked positions may hold garbage and are replaced by selection before any arithmetic, so
neither the loss nor the gradient ever sees them (docs/spec.md §10.5). Normalisers that must span the whole
optimisation batch come in through :class:`LossNormalizers`, so splitting a batch into
micro-batches and summing their losses gives the same gradient as one pass (docs/spec.md §10.9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from cohort.algo.ops import masked_mean, masked_sum
from cohort.algo.registry import Registry

Count = int | torch.Tensor


@dataclass(frozen=True)
class LossNormalizers:
    """Counts over the whole optimisation batch used to normalise each micro-batch's loss.

    ``num_sequences`` divides per-sequence aggregations, ``num_tokens`` the token mean,
    ``num_first_tokens`` (sequences with at least one loss token) the decoupled control-token mean.
    """

    num_sequences: Count
    num_tokens: Count
    num_first_tokens: Count

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> "LossNormalizers":
        """Counts of one whole batch; mask: [B, T] bool."""
        return cls(
            num_sequences=mask.shape[0],
            num_tokens=mask.sum(),
            num_first_tokens=mask.any(dim=-1).sum(),
        )


def _at_least_one(count: Count) -> Count:
    return count.clamp(min=1) if isinstance(count, torch.Tensor) else max(count, 1)


def first_token_mask(mask: torch.Tensor) -> torch.Tensor:
    """True at the first counted token of each row; mask: [B, T] bool -> [B, T] bool."""
    return mask & (mask.long().cumsum(dim=-1) == 1)


# --- token aggregation (docs/spec.md §8.5) -----------------------------------------------------------------

Aggregation = Callable[..., torch.Tensor]
AGGREGATIONS: Registry[Aggregation] = Registry("loss aggregation")


@AGGREGATIONS.register("seq_mean_token_mean")
def _seq_mean_token_mean(values, mask, norm: LossNormalizers, **_) -> torch.Tensor:
    """DeepSeekMath GRPO: mean over sequences of each sequence's token mean."""
    return masked_mean(values, mask, dim=-1).sum() / _at_least_one(norm.num_sequences)


@AGGREGATIONS.register("token_mean")
def _token_mean(values, mask, norm: LossNormalizers, **_) -> torch.Tensor:
    """DAPO: every token of the optimisation batch weighs the same (0 when there are none)."""
    return masked_sum(values, mask) / _at_least_one(norm.num_tokens)


@AGGREGATIONS.register("seq_mean_token_sum")
def _seq_mean_token_sum(values, mask, norm: LossNormalizers, **_) -> torch.Tensor:
    """Mean over sequences of each sequence's token sum (verl ``seq-mean-token-sum``)."""
    return masked_sum(values, mask) / _at_least_one(norm.num_sequences)


@AGGREGATIONS.register("seq_sum_const")
def _seq_sum_const(values, mask, norm: LossNormalizers, *, max_length: int | None = None, **_) -> torch.Tensor:
    """Dr. GRPO: token sums divided by a constant L_max (the generation budget), mean over sequences."""
    if max_length is None or max_length < 1:
        raise ValueError(f"aggregation 'seq_sum_const' needs max_length (L_max, the generation budget) >= 1, got {max_length!r}")
    return masked_sum(values, mask) / (_at_least_one(norm.num_sequences) * max_length)


@AGGREGATIONS.register("decoupled")
def _decoupled(values, mask, norm: LossNormalizers, *, control_weight: float = 1.0, **_) -> torch.Tensor:
    """DeGRPO (Thinkless): alpha x mean over first (control) tokens + token mean over the rest."""
    first = first_token_mask(mask)  # [B, T]
    rest = mask & ~first  # [B, T]
    control = masked_sum(values, first) / _at_least_one(norm.num_first_tokens)
    response = masked_sum(values, rest) / _at_least_one(norm.num_tokens - norm.num_first_tokens)
    return control_weight * control + response


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    normalizers: LossNormalizers | None = None,
    *,
    max_length: int | None = None,
    control_weight: float = 1.0,
) -> torch.Tensor:
    """Reduce per-token values [B, T] to a scalar with aggregation ``mode`` (see ``AGGREGATIONS``)."""
    norm = normalizers if normalizers is not None else LossNormalizers.from_mask(mask)
    return AGGREGATIONS.get(mode)(values, mask, norm, max_length=max_length, control_weight=control_weight)


# --- KL estimators (Schulman's k1/k2/k3, docs/spec.md §2.1) -------------------------------------------------

KL_ESTIMATORS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def _k1(log_x: torch.Tensor) -> torch.Tensor:
    """-log x = log pi_theta - log pi_ref (unbiased, can be negative)."""
    return -log_x


@KL_ESTIMATORS.register("k2")
def _k2(log_x: torch.Tensor) -> torch.Tensor:
    """(log x)^2 / 2 (biased, low variance, >= 0)."""
    return 0.5 * log_x.square()


@KL_ESTIMATORS.register("k3")
def _k3(log_x: torch.Tensor) -> torch.Tensor:
    """x - log x - 1 with x = pi_ref / pi_theta (DeepSeekMath Eq. 4; unbiased on-policy, >= 0)."""
    return torch.expm1(log_x) - log_x


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    estimator: str = "k3",
    log_limit: float = 20.0,
    value_limit: float | None = None,
) -> torch.Tensor:
    """Per-token KL estimate of pi_theta against pi_ref: log x is clamped to ±log_limit (docs/spec.md §10.8),
    then the estimate to ±value_limit when one is given (docs/spec.md §10.13).

    The value cap is ``torch.clamp``, as verl's ``low_var_kl`` and OpenRLHF's ``compute_approx_kl`` cap at
    10: a token whose estimate lies outside the cap adds exactly the cap and no KL gradient. Without it,
    k3 is 16.09 at log x = 3 and 22,015 at log x = 10, with gradients -19.1 and -22,025 per unit of
    log pi_theta, so one token the policy has moved far from the reference can swamp a step.
    """
    log_x = (ref_logprobs - logprobs).clamp(-log_limit, log_limit)
    value = KL_ESTIMATORS.get(estimator)(log_x)
    return value if value_limit is None else value.clamp(-value_limit, value_limit)


# --- the policy loss ------------------------------------------------------------------------------


def _at_least_float32(*tensors: torch.Tensor | None) -> torch.dtype:
    """The widest floating dtype among the tensors, never narrower than float32 (docs/spec.md §10.8)."""
    dtype = torch.float32
    for tensor in tensors:
        if tensor is not None and tensor.dtype.is_floating_point:
            dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _check_same_shape(reference: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != reference.shape:
            raise ValueError(f"{name} must have shape {tuple(reference.shape)} (like logprobs), got {tuple(tensor.shape)}")


def _per_token(values: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor, name: str) -> torch.Tensor:
    """Check logprobs [B, T] and mask, and broadcast per-sequence ``values`` [B] to [B, T]."""
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [B, T], got shape {tuple(logprobs.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = counts), got dtype {mask.dtype}")
    if values.dim() == 1:
        if values.shape[0] != logprobs.shape[0]:
            raise ValueError(f"{name} must be [B] or [B, T] with B={logprobs.shape[0]}, got {tuple(values.shape)}")
        values = values.unsqueeze(1).expand_as(logprobs)  # [B, T]
    _check_same_shape(logprobs, **{name: values, "mask": mask})
    return values


# --- policy losses (one signature; a variant is one registered function) -------------------------


@dataclass(frozen=True)
class ClipRange:
    """The trust region of a clipped surrogate: ratios outside [1 - low, 1 + high] get no gradient
    where clipping binds; ``dual`` (> 1, ``dual_clip`` only) bounds the loss of negative-advantage tokens."""

    low: float = 0.2
    high: float = 0.2
    dual: float | None = None


PolicyLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, ClipRange, float], tuple[torch.Tensor, torch.Tensor]]
POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")
"""``fn(log_ratio, advantages, mask, clip, log_ratio_limit) -> (per-token loss, ratio)``, all [B, T];
inputs are already clean (0) at masked positions; the loss is minimised."""


def _clipped_surrogate_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip: ClipRange) -> torch.Tensor:
    """-min(rho A, clip(rho, 1 - low, 1 + high) A) per token. [B, T]"""
    clipped_ratio = ratio.clamp(1.0 - clip.low, 1.0 + clip.high)  # [B, T]
    return -torch.minimum(ratio * advantages, clipped_ratio * advantages)  # [B, T]


@POLICY_LOSSES.register("clip")
def _token_clip(log_ratio, advantages, mask, clip: ClipRange, log_ratio_limit: float):
    """PPO / GRPO (DeepSeekMath Eq. 1, 3): per-token ratio rho = pi_theta / pi_old, clipped surrogate."""
    ratio = torch.exp(log_ratio.clamp(-log_ratio_limit, log_ratio_limit))  # [B, T]
    return _clipped_surrogate_loss(ratio, advantages, clip), ratio


@POLICY_LOSSES.register("sequence_clip")
def _sequence_clip(log_ratio, advantages, mask, clip: ClipRange, log_ratio_limit: float):
    """GSPO: one length-normalised ratio per sequence, exp(mean_t log rho), for all its tokens."""
    sequence_log_ratio = masked_mean(log_ratio, mask, dim=-1).unsqueeze(-1).expand_as(log_ratio)  # [B, T]
    ratio = torch.exp(sequence_log_ratio.clamp(-log_ratio_limit, log_ratio_limit))  # [B, T]
    return _clipped_surrogate_loss(ratio, advantages, clip), ratio


@POLICY_LOSSES.register("dual_clip")
def _dual_clip(log_ratio, advantages, mask, clip: ClipRange, log_ratio_limit: float):
    """Dual-clip PPO (Ye et al. 2020): the token clip, and for A < 0 the loss is at most dual * |A|."""
    if clip.dual is None or clip.dual <= 1:
        raise ValueError(f"policy loss 'dual_clip' needs dual_clip > 1, got {clip.dual!r}")
    loss, ratio = _token_clip(log_ratio, advantages, mask, clip, log_ratio_limit)  # [B, T] each
    bounded = torch.minimum(loss, -clip.dual * advantages)  # [B, T]
    return torch.where(advantages < 0, bounded, loss), ratio


def _check_policy_knobs(loss: str, eps_low: float, eps_high: float, dual_clip: float | None, beta: float, has_ref: bool,
                        kl_clamp: float | None) -> None:
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"eps_low and eps_high must be >= 0, got {eps_low}, {eps_high}")
    if dual_clip is not None and (dual_clip <= 1 or loss != "dual_clip"):
        raise ValueError(f"dual_clip must be > 1 and is the bound of loss='dual_clip' (got dual_clip={dual_clip}, loss={loss!r})")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and not has_ref:
        raise ValueError("beta > 0 needs ref_logprobs (the reference policy's log-probs)")
    if kl_clamp is not None and not kl_clamp > 0:
        raise ValueError(f"kl_clamp must be > 0 or None (no cap), got {kl_clamp}")


def _kl_term(logp: torch.Tensor, ref_logprobs: torch.Tensor | None, mask: torch.Tensor, estimator: str, log_limit: float,
             kl_clamp: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token KL estimate [B, T] (0 without a reference) and where the cap holds it [B, T] bool."""
    if ref_logprobs is None:
        return torch.zeros_like(logp), torch.zeros_like(mask)
    ref = torch.where(mask, ref_logprobs.to(logp.dtype), torch.zeros((), dtype=logp.dtype, device=logp.device))  # [B, T]
    kl = kl_penalty(logp, ref, estimator, log_limit, kl_clamp)  # [B, T]
    capped = kl.detach().abs() >= kl_clamp if kl_clamp is not None else torch.zeros_like(mask)  # [B, T]
    return kl, capped


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_clamp: float | None = None,
    loss: str = "clip",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    aggregation: str = "seq_mean_token_mean",
    normalizers: LossNormalizers | None = None,
    max_length: int | None = None,
    control_weight: float = 1.0,
    log_ratio_limit: float = 20.0,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO-family loss: a registered clipped surrogate (``POLICY_LOSSES[loss]``) plus ``beta`` x KL, aggregated.

    Per token: ``-min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) + beta * KL`` with
    ``rho = exp(l_theta - l_old)`` for ``loss="clip"``; ``"sequence_clip"`` uses GSPO's
    length-normalised sequence ratio for every token of a sequence; ``"dual_clip"`` bounds the loss
    of negative-advantage tokens by ``dual_clip * |A|``. ``kl_clamp`` (None: off) caps each token's KL
    estimate at ±kl_clamp (:func:`kl_penalty`, docs/spec.md §10.13). ``token_weights`` [B, T] (no
    gradient) multiply each token's surrogate before the KL is added: truncated importance sampling
    for another engine's samples (:func:`truncated_is_weights`), as TRL and verl weight it.

    logprobs, old_logprobs, ref_logprobs: [B, T] float32; advantages: [B] or [B, T]; mask: [B, T] bool
    -> (loss [], stats): 0-d ``clip_frac_low``, ``clip_frac_high``, ``kl`` (capped, as it enters the loss),
    ``kl_clamp_frac`` (tokens at the cap), each over ``normalizers.num_tokens`` (micro-batch stats add
    up to the batch's), and ``ratio_sum`` over the mask (over trained tokens: the mean).
    """
    advantages = _per_token(advantages, logprobs, mask, "advantages")  # [B, T]
    _check_same_shape(logprobs, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, token_weights=token_weights)
    _check_policy_knobs(loss, eps_low, eps_high, dual_clip, beta, ref_logprobs is not None, kl_clamp)
    surrogate = POLICY_LOSSES.get(loss)
    norm = normalizers if normalizers is not None else LossNormalizers.from_mask(mask)

    dtype = _at_least_float32(logprobs, old_logprobs, advantages, ref_logprobs)
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)
    logp = torch.where(mask, logprobs.to(dtype), zero)  # [B, T]
    old = torch.where(mask, old_logprobs.to(dtype), zero)  # [B, T]
    adv = torch.where(mask, advantages.to(dtype), zero)  # [B, T]
    clip = ClipRange(eps_low, eps_high, dual_clip)
    per_token, ratio = surrogate(logp - old, adv, mask, clip, log_ratio_limit)  # [B, T]
    if token_weights is not None:
        per_token = per_token * torch.where(mask, token_weights.detach().to(dtype), zero)  # [B, T]
    kl, kl_capped = _kl_term(logp, ref_logprobs, mask, kl_estimator, log_ratio_limit, kl_clamp)  # [B, T] each
    if beta > 0:
        per_token = per_token + beta * kl

    total = aggregate(per_token, mask, aggregation, norm, max_length=max_length, control_weight=control_weight)
    return total, _policy_stats(adv, ratio, kl, kl_capped, mask, norm, clip)


@torch.no_grad()
def _policy_stats(adv: torch.Tensor, ratio: torch.Tensor, kl: torch.Tensor, kl_capped: torch.Tensor, mask: torch.Tensor,
                  norm: LossNormalizers, clip: ClipRange) -> dict[str, torch.Tensor]:
    """policy_loss's 0-d statistics (see there); inputs [B, T]."""
    token_count = _at_least_one(norm.num_tokens)
    dtype = ratio.dtype
    return {
        "clip_frac_low": masked_sum(((adv < 0) & (ratio < 1.0 - clip.low)).to(dtype), mask) / token_count,
        "clip_frac_high": masked_sum(((adv > 0) & (ratio > 1.0 + clip.high)).to(dtype), mask) / token_count,
        "ratio_sum": masked_sum(ratio, mask),
        "kl": masked_sum(kl, mask) / token_count,
        "kl_clamp_frac": masked_sum(kl_capped.to(dtype), mask) / token_count,
    }


# --- the unified coefficient loss (DeepSeekMath Eq. 5; SFT, RFT, online RFT) ---------------------


def coefficient_loss(
    logprobs: torch.Tensor,
    coefficients: torch.Tensor,
    mask: torch.Tensor,
    *,
    aggregation: str = "seq_mean_token_mean",
    normalizers: LossNormalizers | None = None,
    max_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The unified paradigm's gradient as a loss: ``-aggregate(GC * log pi_theta)`` (docs/spec.md §7, Eq. 5).

    Its gradient is ``E[(1/|o|) sum_t GC(q, o, t) grad log pi(o_t | q, o_<t)]`` under the default
    per-sequence token mean. GC = 1 gives SFT (Eq. 7); GC = I(o correct) gives RFT and online RFT
    (Eq. 10-11). The coefficients carry no gradient.

    logprobs: [B, T]; coefficients: [B] or [B, T]; mask: [B, T] bool
    -> (loss [], stats: ``nll``, the token mean of -log pi over the counted tokens, normalised by
    ``normalizers.num_tokens`` so micro-batch stats add up)
    """
    coefficients = _per_token(coefficients, logprobs, mask, "coefficients")  # [B, T]
    norm = normalizers if normalizers is not None else LossNormalizers.from_mask(mask)
    dtype = _at_least_float32(logprobs, coefficients)
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)
    logp = torch.where(mask, logprobs.to(dtype), zero)  # [B, T]
    weight = torch.where(mask, coefficients.detach().to(dtype), zero)  # [B, T]
    loss = aggregate(-weight * logp, mask, aggregation, norm, max_length=max_length)
    with torch.no_grad():
        stats = {"nll": masked_sum(-logp, mask) / _at_least_one(norm.num_tokens)}
    return loss, stats


# --- DPO and other pairwise preference losses (docs/spec.md §1.2, §1.3) ----------------------------------

PairLoss = Callable[[torch.Tensor, float], torch.Tensor]
"""(h [B], beta) -> per-pair loss [B], where h = log-ratio(chosen) - log-ratio(rejected)."""
PAIR_LOSSES: Registry[PairLoss] = Registry("pairwise preference loss")


@PAIR_LOSSES.register("sigmoid")
def _sigmoid_pair_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023): -log sigmoid(beta h)."""
    return -F.logsigmoid(beta * h)


def dpo_loss(
    chosen_logprobs: torch.Tensor,
    rejected_logprobs: torch.Tensor,
    ref_chosen_logprobs: torch.Tensor,
    ref_rejected_logprobs: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_mask: torch.Tensor,
    *,
    beta: float = 0.1,
    length_normalized: bool = False,
    num_pairs: Count | None = None,
    loss: str = "sigmoid",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO: ``-log sigmoid(beta (log-ratio chosen - log-ratio rejected))``, mean over pairs; another
    registered pairwise loss with ``loss`` (``PAIR_LOSSES``: a function of h = log-ratio chosen -
    log-ratio rejected and beta).

    Log-ratios are token sums of ``log pi_theta - log pi_ref`` (standard DPO) or token means
    (``length_normalized``, DeepSeekMath A.1.4 Eq. 12). ``num_pairs`` is the number of pairs of the
    whole optimisation batch (default: this call's), so micro-batch losses and stats add up.

    *_logprobs: per-token [B, T_c] (chosen) and [B, T_r] (rejected); masks bool of the same shapes.
    -> (loss [], stats: ``reward_chosen``, ``reward_rejected``, ``margin``, ``accuracy``)
    """
    _check_same_shape(chosen_logprobs, ref_chosen_logprobs=ref_chosen_logprobs, chosen_mask=chosen_mask)
    _check_same_shape(rejected_logprobs, ref_rejected_logprobs=ref_rejected_logprobs, rejected_mask=rejected_mask)
    if chosen_logprobs.shape[0] != rejected_logprobs.shape[0]:
        raise ValueError(
            f"chosen and rejected must hold the same number of pairs, got {chosen_logprobs.shape[0]} "
            f"and {rejected_logprobs.shape[0]}"
        )
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    reduce = masked_mean if length_normalized else masked_sum
    dtype = _at_least_float32(chosen_logprobs, rejected_logprobs, ref_chosen_logprobs, ref_rejected_logprobs)
    chosen = reduce(chosen_logprobs.to(dtype) - ref_chosen_logprobs.to(dtype), chosen_mask, dim=-1)  # [B]
    rejected = reduce(rejected_logprobs.to(dtype) - ref_rejected_logprobs.to(dtype), rejected_mask, dim=-1)  # [B]
    logits = beta * (chosen - rejected)  # [B]
    pairs = _at_least_one(chosen.shape[0] if num_pairs is None else num_pairs)
    total = PAIR_LOSSES.get(loss)(chosen - rejected, beta).sum() / pairs
    with torch.no_grad():
        stats = {
            "reward_chosen": (beta * chosen).sum() / pairs,
            "reward_rejected": (beta * rejected).sum() / pairs,
            "margin": logits.sum() / pairs,
            "accuracy": (logits > 0).to(dtype).sum() / pairs,
        }
    return total, stats


# --- PPO value loss -------------------------------------------------------------------------------


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range: float = 0.2,
    normalizers: LossNormalizers | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped value loss, token mean of ``0.5 max((V - R)^2, (V_clip - R)^2)``.

    ``V_clip = V_old + clip(V - V_old, -clip_range, clip_range)``.
    values, old_values, returns: [B, T]; mask: [B, T] bool -> (loss [], stats ``value_clip_frac``)
    """
    _check_same_shape(values, old_values=old_values, returns=returns, mask=mask)
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    norm = normalizers if normalizers is not None else LossNormalizers.from_mask(mask)
    dtype = _at_least_float32(values, old_values, returns)
    zero = torch.zeros((), dtype=dtype, device=values.device)
    v = torch.where(mask, values.to(dtype), zero)  # [B, T]
    v_old = torch.where(mask, old_values.to(dtype), zero)  # [B, T]
    target = torch.where(mask, returns.to(dtype), zero)  # [B, T]
    v_clipped = v_old + (v - v_old).clamp(-clip_range, clip_range)  # [B, T]
    unclipped_error = (v - target).square()  # [B, T]
    clipped_error = (v_clipped - target).square()  # [B, T]
    loss = aggregate(0.5 * torch.maximum(unclipped_error, clipped_error), mask, "token_mean", norm)
    with torch.no_grad():
        stats = {
            "value_clip_frac": masked_sum((clipped_error > unclipped_error).to(dtype), mask)
            / _at_least_one(norm.num_tokens)
        }
    return loss, stats
