"""Process-supervision advantages (DeepSeekMath §4.1.3; docs/spec.md §4, §4.1, §10.11).

A process reward model (or a gold step checker) scores every step of every completion. The step
rewards of a group are pooled and normalised ``(r - mean(R)) / (std(R) + eps)``; a *credit form*
then turns the normalised rewards of one completion into one value per step, and every token of a
step gets its step's value (tokens after the last step get 0). Credit forms share one signature and
live in ``PROCESS_CREDITS``:

* ``sum`` (DeepSeekMath): a step's value is the sum of the normalised rewards of it and every later
  step, a reward-to-go without discount;
* ``min`` (PURE, Cheng et al. 2025, arXiv:2504.15275): the smallest of them, so no run of steps the
  reward model over-rates can add up, and the value is bounded by one step reward. Minima of
  normalised rewards lean negative (the weakest of several steps is usually below the pool's mean),
  so the min form subtracts a group baseline, the mean over the group's scored completions of their
  whole-completion value (their weakest step), as PURE's RLOO baseline does: a group's credit is
  then centred, as the sum form's is by construction (its first-token values add up to 0).

Optionally a verifiable outcome reward (e.g. the task's rule) is mixed in: its group-normalised
outcome advantage, times a weight, is added to every token of the completion. That is a reward at the
last step carried back to every earlier token, as the sum form's reward-to-go carries it, and added
outside the minimum under the min form, as PURE adds its verifiable rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cohort.algo.advantages import (
    Advantages,
    _check_ddof,
    _check_finite,
    _grouped_stats,
    _stat_dtype,
    group_index,
)
from cohort.algo.registry import Registry

CreditFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(normalised step rewards [N, K], kept steps [N, K] bool) -> value of each step [N, K], 0 where not kept."""


@dataclass(frozen=True)
class CreditForm:
    """A credit form and whether its values need a group baseline (``centred=False``: subtract the
    group mean of the completions' first-step values) to be centred within a group."""

    fn: CreditFn
    centred: bool


PROCESS_CREDITS: Registry[CreditForm] = Registry("process credit form")


def _credit(name: str, *, centred: bool) -> Callable[[CreditFn], CreditFn]:
    def register(fn: CreditFn) -> CreditFn:
        PROCESS_CREDITS.register(name)(CreditForm(fn, centred))
        return fn

    return register


@_credit("sum", centred=True)
def sum_credit(rewards: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """DeepSeekMath's reward-to-go: value of step j = sum of the rewards of steps j, j+1, ... K.

    >>> sum_credit(torch.tensor([[0.5, -1.0, 0.8]]), torch.tensor([[True, True, True]]))
    tensor([[ 0.3000, -0.2000,  0.8000]])
    """
    kept = torch.where(keep, rewards, torch.zeros((), dtype=rewards.dtype, device=rewards.device))  # [N, K]
    return kept.flip(1).cumsum(1).flip(1)  # [N, K]


@_credit("min", centred=False)
def min_credit(rewards: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """PURE's min form: value of step j = the smallest reward among steps j, j+1, ... K.

    >>> min_credit(torch.tensor([[0.5, -1.0, 0.8]]), torch.tensor([[True, True, True]]))
    tensor([[-1.0000, -1.0000,  0.8000]])
    """
    inf = torch.tensor(float("inf"), dtype=rewards.dtype, device=rewards.device)
    kept = torch.where(keep, rewards, inf)  # [N, K]: steps left out never win the minimum
    suffix_min = kept.flip(1).cummin(1).values.flip(1)  # [N, K]
    return torch.where(keep, suffix_min, torch.zeros_like(suffix_min))  # [N, K]


def group_baseline(step_values: torch.Tensor, keep: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Subtract from every kept step the mean, over its group's completions with kept steps, of their
    first step's value (a completion's whole value). step_values, keep: [N, K]; index: [N] -> [N, K]"""
    scored = keep[:, 0]  # [N]: kept steps come first
    zero = torch.zeros((), dtype=step_values.dtype, device=step_values.device)
    first = torch.where(scored, step_values[:, 0], zero)  # [N]
    totals = torch.zeros(num_groups, dtype=step_values.dtype, device=step_values.device).index_add(0, index, first)  # [G]
    counts = torch.zeros(num_groups, dtype=step_values.dtype, device=step_values.device).index_add(0, index, scored.to(step_values.dtype))
    baseline = (totals / counts.clamp(min=1))[index]  # [N]
    return torch.where(keep, step_values - baseline.unsqueeze(1), zero)  # [N, K]


def token_values(step_values: torch.Tensor, step_ends: torch.Tensor, step_mask: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Spread per-step values over tokens: token t (1-based) gets the value of the first step whose
    end is >= t; tokens after the last step get 0.

    step_values: [N, K]; step_ends: [N, K] long (valid where step_mask); step_mask: [N, K] bool -> [N, T]
    """
    num_samples = step_values.shape[0]
    beyond = torch.full_like(step_ends, num_tokens + 1)
    ends = torch.where(step_mask, step_ends, beyond)  # [N, K]: padding steps end after every token
    positions = torch.arange(1, num_tokens + 1, device=step_ends.device)  # [T]
    step_of_token = (ends.unsqueeze(1) < positions.view(1, -1, 1)).sum(dim=2)  # [N, T] in 0..K
    values = torch.where(step_mask, step_values, torch.zeros_like(step_values))  # [N, K]
    padded = torch.cat([values, torch.zeros(num_samples, 1, dtype=values.dtype, device=values.device)], dim=1)  # [N, K+1]
    return padded.gather(1, step_of_token)  # [N, T]


def _check_process_inputs(
    step_rewards: torch.Tensor,
    step_ends: torch.Tensor,
    step_mask: torch.Tensor,
    completion_lengths: torch.Tensor,
    num_tokens: int,
    ddof: int,
    eps: float,
) -> None:
    """Shapes, dtypes, step padding, and step ends strictly increasing within [1, |o_i|] (docs/spec.md §10.11)."""
    if step_rewards.dim() != 2:
        raise ValueError(f"step_rewards must be 2-D [N, K], got shape {tuple(step_rewards.shape)}")
    shape = tuple(step_rewards.shape)
    if tuple(step_ends.shape) != shape:
        raise ValueError(f"step_ends must have the shape of step_rewards {shape}, got {tuple(step_ends.shape)}")
    if tuple(step_mask.shape) != shape or step_mask.dtype != torch.bool:
        raise ValueError(f"step_mask must be a bool tensor of shape {shape}, got {step_mask.dtype} {tuple(step_mask.shape)}")
    if step_ends.dtype.is_floating_point:
        raise ValueError(f"step_ends must be an integer tensor, got dtype {step_ends.dtype}")
    num_samples, max_steps = shape
    if tuple(completion_lengths.shape) != (num_samples,):
        raise ValueError(
            f"completion_lengths must have shape [{num_samples}], got {tuple(completion_lengths.shape)}"
        )
    if num_tokens < 0 or bool((completion_lengths > num_tokens).any()) or bool((completion_lengths < 0).any()):
        raise ValueError(f"completion_lengths must lie in [0, num_tokens={num_tokens}]")
    _check_ddof(ddof)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if max_steps > 1 and bool((step_mask[:, 1:] & ~step_mask[:, :-1]).any()):
        raise ValueError("step_mask must mark real steps first in each row (padding steps only at the end)")
    ends = torch.where(step_mask, step_ends, torch.ones_like(step_ends))  # [N, K]
    out_of_bounds = step_mask & ((ends < 1) | (ends > completion_lengths.unsqueeze(1)))  # [N, K]
    if out_of_bounds.any():
        row, col = out_of_bounds.nonzero()[0].tolist()
        raise ValueError(
            f"step_ends[{row}, {col}] = {int(step_ends[row, col])} is out of bounds; "
            f"expected 1 <= index <= |o_{row}| = {int(completion_lengths[row])}"
        )
    not_increasing = step_mask[:, 1:] & (ends[:, 1:] <= ends[:, :-1])  # [N, K-1]
    if not_increasing.any():
        row, col = not_increasing.nonzero()[0].tolist()
        raise ValueError(
            f"step_ends must be strictly increasing per completion; row {row} has "
            f"{int(ends[row, col])} then {int(ends[row, col + 1])}"
        )


def step_problems(step_ends: torch.Tensor, step_mask: torch.Tensor, completion_lengths: torch.Tensor) -> torch.Tensor:
    """Which completions have step ends that are out of ``[1, |o_i|]`` or not strictly increasing
    (docs/spec.md §10.11): a caller that builds steps from text can drop those samples instead of
    failing. step_ends, step_mask: [N, K]; completion_lengths: [N] -> [N] bool"""
    ends = torch.where(step_mask, step_ends, torch.ones_like(step_ends))  # [N, K]
    out_of_bounds = step_mask & ((ends < 1) | (ends > completion_lengths.unsqueeze(1)))  # [N, K]
    not_increasing = step_mask[:, 1:] & (ends[:, 1:] <= ends[:, :-1])  # [N, K-1]
    return out_of_bounds.any(dim=1) | not_increasing.any(dim=1)  # [N]


def _outcome_term(outcome_rewards: torch.Tensor | None, weight: float, valid: torch.Tensor, index: torch.Tensor, num_groups: int,
                  ddof: int, eps: float, strict: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` x GRPO's outcome advantage of ``outcome_rewards`` within each group (0 for a group with
    fewer than two scored outcomes or all equal); a NaN outcome voids its sample. -> (term [N], valid [N])"""
    zero = torch.zeros(valid.shape[0], dtype=dtype, device=valid.device)
    if outcome_rewards is None or weight == 0:
        return zero, valid
    if tuple(outcome_rewards.shape) != (valid.shape[0],):
        raise ValueError(f"outcome_rewards must have shape [{valid.shape[0]}], got {tuple(outcome_rewards.shape)}")
    known = _check_finite(outcome_rewards, "outcome_rewards", strict) & valid  # [N]
    rewards = torch.where(known, outcome_rewards.to(dtype), zero)  # [N]
    count, mean, std, spread = _grouped_stats(rewards, known, index, num_groups, ddof)  # each [G]
    usable = known & ~((count < 2) | (spread == 0))[index]  # [N]
    term = torch.where(usable, weight * (rewards - mean[index]) / (std[index] + eps), zero)  # [N]
    return term, known


def process_advantages(
    step_rewards: torch.Tensor,
    step_ends: torch.Tensor,
    step_mask: torch.Tensor,
    completion_lengths: torch.Tensor,
    num_tokens: int,
    group_size: int | None = None,
    *,
    group_ids: torch.Tensor | None = None,
    credit: str = "sum",
    outcome_rewards: torch.Tensor | None = None,
    outcome_weight: float = 0.0,
    ddof: int = 1,
    eps: float = 1e-4,
    strict: bool = False,
    scored: torch.Tensor | None = None,
) -> Advantages:
    """Process-supervision token advantages (DeepSeekMath §4.1.3, docs/spec.md §4, §4.1, §10.11).

    Step rewards of a whole group are pooled, normalised ``(r - mean(R)) / (std(R) + eps)``, turned
    into per-step values by the credit form ``credit`` (``PROCESS_CREDITS``: ``sum`` = DeepSeekMath's
    reward-to-go, ``min`` = PURE's minimum of the rewards still to come, less the group's mean
    whole-completion minimum), and every token gets the value of the step it belongs to. With ``outcome_rewards`` and ``outcome_weight`` w != 0, w x the
    outcome reward is added to each completion's last step before pooling.

    step_rewards: [N, K] (NaN = could not score: the sample contributes nothing, valid=False)
    step_ends: [N, K] long, 1-based index of each step's last token within the completion
    step_mask: [N, K] bool, True for real steps; real steps come first in each row
    completion_lengths: [N] long (|o_i|); num_tokens: T, width of the completion tensors
    outcome_rewards: [N] or None (NaN = could not score: valid=False when w != 0)
    scored: [N] bool or None; False marks a sample the PRM could not score at all (valid=False)
    -> Advantages(values [N, T], valid [N])
    """
    _check_process_inputs(step_rewards, step_ends, step_mask, completion_lengths, num_tokens, ddof, eps)
    form = PROCESS_CREDITS.get(credit)
    num_samples, max_steps = step_rewards.shape
    index, num_groups = group_index(num_samples, group_size, group_ids, step_rewards.device)
    zero = torch.zeros((), dtype=step_rewards.dtype, device=step_rewards.device)
    finite = _check_finite(torch.where(step_mask, step_rewards, zero), "step_rewards", strict)  # [N, K]
    valid = finite.all(dim=1)  # [N]: one unscorable step voids the sample
    if scored is not None:
        if tuple(scored.shape) != (num_samples,) or scored.dtype != torch.bool:
            raise ValueError(f"scored must be a bool tensor of shape [{num_samples}], got {scored.dtype} {tuple(scored.shape)}")
        valid = valid & scored.to(valid.device)
    values = torch.where(finite, step_rewards, zero).to(_stat_dtype(step_rewards))  # [N, K]
    term, valid = _outcome_term(outcome_rewards, outcome_weight, valid, index, num_groups, ddof, eps, strict, values.dtype)  # [N]
    counted = step_mask & valid.unsqueeze(1)  # [N, K]
    step_group = index.unsqueeze(1).expand(num_samples, max_steps)  # [N, K]
    count, mean, std, spread = _grouped_stats(
        values.reshape(-1), counted.reshape(-1), step_group.reshape(-1), num_groups, ddof
    )  # each [num_groups]
    degenerate = ((count < 2) | (spread == 0))[index]  # [N]
    normalised = (values - mean[index].unsqueeze(1)) / (std[index].unsqueeze(1) + eps)  # [N, K]
    keep = counted & ~degenerate.unsqueeze(1)  # [N, K]
    step_values = form.fn(normalised, keep)  # [N, K]
    if not form.centred:
        step_values = group_baseline(step_values, keep, index, num_groups)  # [N, K]
    credit = token_values(step_values, step_ends, keep, num_tokens)  # [N, T]
    in_completion = torch.arange(num_tokens, device=credit.device) < completion_lengths.to(credit.device).unsqueeze(1)  # [N, T]
    return Advantages(credit + torch.where(in_completion, term.unsqueeze(1), torch.zeros_like(credit)), valid)
