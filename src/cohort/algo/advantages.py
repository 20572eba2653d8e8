"""Advantages: group-relative outcome supervision (docs/spec.md §3, §10) and GAE (§1.1); process
supervision (§4) lives in :mod:`cohort.algo.process` and shares the group statistics defined here.

Outcome estimators share one signature and live in ``OUTCOME_ESTIMATORS``; a new variant is one
decorated function of :class:`GroupStats`. The rules every estimator inherits:

* statistics use only the valid (finite) rewards of a group; NaN marks "could not score" and gets
  advantage 0 and ``valid = False`` (docs/spec.md §10.7); ±inf raises;
* a group with fewer than two valid rewards, or whose valid rewards are all exactly equal
  (``max - min == 0``), gets advantage exactly 0 — never a division (docs/spec.md §10.1, §11.4);
* ``eps`` is added to the std outside the square root; ``ddof`` picks population (0) or sample (1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from cohort.algo.registry import Registry


class Advantages(NamedTuple):
    """Advantages and the mask of samples whose reward could be used (False = NaN reward)."""

    values: torch.Tensor  # [N] (outcome) or [N, T] (process)
    valid: torch.Tensor  # [N] bool


@dataclass(frozen=True)
class GroupStats:
    """Per-sample view of the statistics of each sample's group, over valid rewards only."""

    rewards: torch.Tensor  # [N], 0 where invalid
    valid: torch.Tensor  # [N] bool
    count: torch.Tensor  # [N] valid rewards in the sample's group
    mean: torch.Tensor  # [N] group mean
    std: torch.Tensor  # [N] group std with the requested ddof (0 where undefined)
    batch_std: torch.Tensor  # [] std of all valid rewards of the batch, same ddof
    degenerate: torch.Tensor  # [N] bool: group has < 2 valid rewards or zero range


EstimatorFn = Callable[[GroupStats, float], torch.Tensor]


@dataclass(frozen=True)
class OutcomeEstimator:
    """An advantage estimator and the properties the rest of the code asks it about.

    ``zeroes_equal_groups``: a group whose valid rewards are all equal (or fewer than two) gets
    advantage exactly 0 (docs/spec.md §10.1); estimators with a group baseline need this, one without a
    baseline (REINFORCE: the reward itself, e.g. online RFT's coefficient) does not.
    ``needs_group``: the estimator compares samples of one prompt, so the group size must be >= 2.
    """

    fn: EstimatorFn
    zeroes_equal_groups: bool = True
    needs_group: bool = True


OUTCOME_ESTIMATORS: Registry[OutcomeEstimator] = Registry("advantage estimator")


def _estimator(name: str, *, zeroes_equal_groups: bool = True, needs_group: bool = True) -> Callable[[EstimatorFn], EstimatorFn]:
    """Decorator: register ``fn`` as the outcome estimator ``name`` with its properties."""

    def register(fn: EstimatorFn) -> EstimatorFn:
        OUTCOME_ESTIMATORS.register(name)(OutcomeEstimator(fn, zeroes_equal_groups, needs_group))
        return fn

    return register


@_estimator("group_norm")
def _group_norm(stats: GroupStats, eps: float) -> torch.Tensor:
    """GRPO (DeepSeekMath §4.1.2): (r - mean_group) / (std_group + eps)."""
    return (stats.rewards - stats.mean) / (stats.std + eps)


@_estimator("group_center")
def _group_center(stats: GroupStats, eps: float) -> torch.Tensor:
    """Dr. GRPO: r - mean_group, no std division (eps unused)."""
    return stats.rewards - stats.mean


@_estimator("batch_norm")
def _batch_norm(stats: GroupStats, eps: float) -> torch.Tensor:
    """Group mean as baseline, std of the whole batch as scale (TRL ``scale_rewards="batch"``)."""
    return (stats.rewards - stats.mean) / (stats.batch_std + eps)


@_estimator("rloo")
def _leave_one_out(stats: GroupStats, eps: float) -> torch.Tensor:
    """RLOO: r_i - mean of the other valid rewards of the group = n/(n-1) * (r_i - mean)."""
    n = stats.count.to(stats.rewards.dtype)
    return (stats.rewards - stats.mean) * n / (n - 1).clamp(min=1)


@_estimator("reinforce", zeroes_equal_groups=False, needs_group=False)
def _reinforce(stats: GroupStats, eps: float) -> torch.Tensor:
    """REINFORCE without a baseline: the reward itself. With a 0/1 correctness reward this is online
    RFT's gradient coefficient I(o) (DeepSeekMath Eq. 10-11): a correct sample keeps 1 even when
    its whole group is correct."""
    return stats.rewards


def _stat_dtype(rewards: torch.Tensor) -> torch.dtype:
    return torch.promote_types(rewards.dtype, torch.float32)


def group_index(
    num_samples: int, group_size: int | None, group_ids: torch.Tensor | None, device: torch.device, min_group_size: int = 2
) -> tuple[torch.Tensor, int]:
    """Dense group index per sample and the number of groups, from a group size or explicit ids.

    With ``group_size`` the batch is group-contiguous (rows g*G .. g*G+G-1 form group g); explicit
    ``group_ids`` allow groups of unequal size (any integer labels).
    """
    if (group_size is None) == (group_ids is None):
        raise ValueError("pass exactly one of group_size (contiguous groups) or group_ids (explicit labels)")
    if group_ids is not None:
        if group_ids.dim() != 1 or group_ids.shape[0] != num_samples:
            raise ValueError(f"group_ids must have shape [{num_samples}], got {tuple(group_ids.shape)}")
        if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
            raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
        labels, index = torch.unique(group_ids, return_inverse=True)
        return index.to(device), int(labels.numel())
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < min_group_size:
        raise ValueError(f"group_size must be an int >= {min_group_size} (G samples per prompt), got {group_size!r}")
    if num_samples % group_size != 0:
        raise ValueError(
            f"the batch of {num_samples} samples is not divisible by group_size={group_size}; "
            "expected rows grouped as [prompt0 x G, prompt1 x G, ...]"
        )
    return torch.arange(num_samples, device=device) // group_size, num_samples // group_size


def _check_finite(values: torch.Tensor, name: str, strict: bool) -> torch.Tensor:
    """Validity mask of a reward tensor: NaN = could not score; ±inf raises; strict: NaN raises too."""
    infinite = torch.isinf(values)
    if infinite.any():
        where = infinite.nonzero()[0].tolist()
        raise ValueError(f"{name} contains ±inf at index {where}; rewards must be finite (or NaN for 'could not score')")
    valid = ~torch.isnan(values)
    if strict and not valid.all():
        where = (~valid).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN at index {where} and strict=True")
    return valid


def _grouped_stats(
    values: torch.Tensor, valid: torch.Tensor, index: torch.Tensor, num_groups: int, ddof: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group count, mean, std(ddof) and range (max - min) over the valid entries of [M] values."""
    zeros = torch.zeros(num_groups, dtype=values.dtype, device=values.device)  # [K]
    clean = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device))  # [M]
    count = zeros.index_add(0, index, valid.to(values.dtype))  # [K]
    mean = zeros.index_add(0, index, clean) / count.clamp(min=1)  # [K]
    centred = torch.where(valid, clean - mean[index], torch.zeros((), dtype=values.dtype, device=values.device))
    sq_sum = zeros.index_add(0, index, centred.square())  # [K]
    std = (sq_sum / (count - ddof).clamp(min=1)).sqrt()  # [K]
    big = torch.finfo(values.dtype).max
    high = torch.full_like(zeros, -big).scatter_reduce(0, index, torch.where(valid, clean, -big), "amax")  # [K]
    low = torch.full_like(zeros, big).scatter_reduce(0, index, torch.where(valid, clean, big), "amin")  # [K]
    return count, mean, std, high - low


def _check_ddof(ddof: int) -> None:
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (population std) or 1 (sample std), got {ddof!r}")


def outcome_advantages(
    rewards: torch.Tensor,
    group_size: int | None = None,
    *,
    group_ids: torch.Tensor | None = None,
    estimator: str = "group_norm",
    ddof: int = 1,
    eps: float = 1e-4,
    strict: bool = False,
) -> Advantages:
    """Group-relative outcome advantages, one value per sample (docs/spec.md §3, §8.1, §10).

    Whether an all-equal group gets 0 is a property of the estimator
    (``OUTCOME_ESTIMATORS.get(name).zeroes_equal_groups``).

    rewards: [N] (NaN = could not score) -> Advantages(values [N], valid [N] bool)

    >>> outcome_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64), 4, ddof=0, eps=0.0).values
    tensor([ 1., -1.,  1., -1.], dtype=torch.float64)
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if not rewards.dtype.is_floating_point:
        raise ValueError(f"rewards must be a floating tensor, got dtype {rewards.dtype}")
    _check_ddof(ddof)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    estimate = OUTCOME_ESTIMATORS.get(estimator)
    index, num_groups = group_index(rewards.shape[0], group_size, group_ids, rewards.device, 2 if estimate.needs_group else 1)
    valid = _check_finite(rewards, "rewards", strict)
    values = rewards.to(_stat_dtype(rewards))  # [N]
    count, mean, std, spread = _grouped_stats(values, valid, index, num_groups, ddof)  # each [K]
    _, _, batch_std, _ = _grouped_stats(values, valid, torch.zeros_like(index), 1, ddof)  # each [1]
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    stats = GroupStats(
        rewards=torch.where(valid, values, zero),
        valid=valid,
        count=count[index],
        mean=mean[index],
        std=std[index],
        batch_std=batch_std[0],
        degenerate=((count < 2) | (spread == 0))[index],
    )
    raw = estimate.fn(stats, eps)  # [N]
    keep = valid & ~stats.degenerate if estimate.zeroes_equal_groups else valid  # [N]
    return Advantages(torch.where(keep, raw, zero), valid)


def degenerate_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Groups whose advantages are all zero by rule: fewer than 2 valid rewards, or all equal (§10.1).

    These carry no policy-gradient signal (DAPO's dynamic sampling drops them).
    rewards: [N] (NaN = could not score), group-contiguous -> [N // group_size] bool
    """
    index, num_groups = group_index(rewards.shape[0], group_size, None, rewards.device, min_group_size=1)
    valid = ~torch.isnan(rewards)
    count, _, _, spread = _grouped_stats(rewards.to(_stat_dtype(rewards)), valid, index, num_groups, 0)
    return (count < 2) | (spread == 0)  # [N // group_size]


def gae_advantages(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded completions (docs/spec.md §1.1, PPO baseline).

    ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)`` with ``V(s_{|o|+1}) = 0`` (the value after the last
    counted token is zero), ``A_t = sum_l (gamma lam)^l delta_{t+l}``. Returns
    ``(advantages, returns)`` with ``returns = advantages + values`` (the value model's regression
    target), both 0 where ``mask`` is False.

    The advantages are NOT whitened here. verl whitens them inside its GAE function
    (``masked_whiten`` over the batch); cohort keeps GAE a pure estimator and lets the PPO method
    whiten afterwards with :func:`cohort.algo.masked_whiten` (``ppo.whiten_advantages``, on by
    default), so the returns the value model regresses on are never affected by the whitening.

    token_rewards, values: [B, T]; mask: [B, T] bool, a prefix of each row (True then False)
    -> ([B, T], [B, T])
    """
    if token_rewards.shape != values.shape or mask.shape != values.shape:
        raise ValueError(
            f"token_rewards, values and mask must share one shape; got {tuple(token_rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.shape[1] > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        row = int((mask[:, 1:] & ~mask[:, :-1]).any(dim=1).nonzero()[0])
        raise ValueError(f"mask must be a prefix of each row (True tokens, then padding); row {row} has a gap")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    dtype = torch.promote_types(values.dtype, torch.float32)
    zero = torch.zeros((), dtype=dtype, device=values.device)
    rewards = torch.where(mask, token_rewards.to(dtype), zero)  # [B, T]
    values = torch.where(mask, values.to(dtype), zero)  # [B, T]
    next_value = torch.zeros(values.shape[0], dtype=dtype, device=values.device)  # [B]
    running = torch.zeros_like(next_value)  # [B]
    advantages = torch.zeros_like(values)  # [B, T]
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # [B]
        running = torch.where(mask[:, t], delta + gamma * lam * running, zero)  # [B]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, torch.where(mask, advantages + values, zero)
