"""How a batch is cut for the update: mini-batches (one optimizer step each) on unit boundaries, and
micro-batches (one forward/backward each) bounded by rows and padded tokens; and the no-grad
forwards (pi_old, the reference) over the same cuts."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch

from cohort.distributed import even_count
from cohort.models.scoring import completion_logprobs, prompts_shared_often_enough
from cohort.rollout import Rollout


def batch_inputs(rollout: Rollout, rows: list[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Prompt and completion tensors of ``rows``, trimmed to the widths those rows need."""
    index = torch.tensor(rows, device=device)
    prompt_ids, prompt_mask = rollout.expanded_prompts()  # [N, Lp]
    prompt_ids, prompt_mask = prompt_ids[index], prompt_mask[index]  # [n, Lp]
    prompt_width = int(prompt_mask.sum(1).max())
    completion_mask = rollout.completion_mask[index]  # [n, T]
    width = max(1, int(completion_mask.sum(1).max()))
    return (
        prompt_ids[:, -prompt_width:],  # [n, Lp']
        prompt_mask[:, -prompt_width:],  # [n, Lp']
        rollout.completion_ids[index, :width],  # [n, T']
        completion_mask[:, :width],  # [n, T']
    )


def mini_batches(num_rows: int, count: int, group_size: int, unit: str) -> list[list[int]]:
    """Split the rows into ``count`` contiguous mini-batches (on group boundaries for unit "group")."""
    if unit == "group":
        groups = np.array_split(np.arange(num_rows // group_size), min(count, num_rows // group_size))
        return [[int(g) * group_size + i for g in chunk for i in range(group_size)] for chunk in groups if len(chunk)]
    return [[int(r) for r in chunk] for chunk in np.array_split(np.arange(num_rows), min(count, num_rows)) if len(chunk)]


def micro_batches(rows: list[int], lengths: torch.Tensor, size: int, group_size: int = 1, unit: str = "row",
                  token_budget: int = 0, prompt_lengths: torch.Tensor | None = None) -> list[list[int]]:
    """Cut ``rows`` into micro-batches, shortest first so each pads little: at most ``size`` rows and,
    with ``token_budget`` > 0, at most that many padded tokens (rows x (widest prompt + widest
    completion) of the micro-batch), so long completions go in small micro-batches and short ones in
    large. Unit "row" sorts rows by completion length; unit "group" keeps each group's rows together
    (a DPO pair is never split), sorted by their longest row. A micro-batch holds at least one unit.
    """
    if unit == "row":
        units = [[row] for row in rows]
    else:
        by_group: dict[int, list[int]] = {}
        for row in rows:
            by_group.setdefault(row // group_size, []).append(row)
        units = list(by_group.values())
    completion = [int(x) for x in lengths.tolist()]
    prompt = [int(x) for x in prompt_lengths.tolist()] if prompt_lengths is not None else None
    units.sort(key=lambda members: max(completion[r] for r in members))
    batches: list[list[int]] = [[]]
    widest = (0, 0)  # (prompt, completion) widths of the micro-batch being filled
    for members in units:
        width = (max(prompt[r] for r in members) if prompt else 0, max(completion[r] for r in members))
        grown = (max(widest[0], width[0]), max(widest[1], width[1]))
        count = len(batches[-1]) + len(members)
        if batches[-1] and (count > size or (token_budget > 0 and count * sum(grown) > token_budget)):
            batches.append([])
            grown = width
        batches[-1].extend(members)
        widest = grown
    return [batch for batch in batches if batch]


def rollout_micro_batches(rollout: Rollout, rows: list[int], size: int, token_budget: int = 0, unit: str = "row") -> list[list[int]]:
    """:func:`micro_batches` of a rollout's ``rows``, with its completion and prompt lengths.

    Unit "row" may still keep groups whole: rows sorted across groups pad least, but a micro-batch
    of whole groups runs each shared prompt once (``cohort.models`` scores a prompt used by at least
    two rows once), which wins when prompts are long next to the spread of completion lengths. Of
    the two cuts, the one with fewer estimated token positions is taken.
    """
    prompt_lengths = rollout.prompt_mask.sum(dim=1).repeat_interleave(rollout.group_size)  # [N]
    lengths, group_size = rollout.completion_lengths, rollout.group_size
    plan = micro_batches(rows, lengths, size, group_size, unit, token_budget, prompt_lengths)
    if unit == "row" and 1 < group_size <= size:
        grouped = micro_batches(rows, lengths, size, group_size, "group", token_budget, prompt_lengths)
        completion, prompt = lengths.tolist(), prompt_lengths.tolist()
        if _token_positions(grouped, completion, prompt, group_size) < _token_positions(plan, completion, prompt, group_size):
            plan = grouped
    return plan


def _token_positions(plan: list[list[int]], completion: list[int], prompt: list[int], group_size: int) -> int:
    """Positions the forwards of ``plan`` run: per micro-batch, each distinct prompt once when
    ``cohort.models`` would share it, else once per row; plus every row's completion, padded to the
    micro-batch's longest."""
    total = 0
    for micro in plan:
        groups = {row // group_size for row in micro}
        prompt_width, completion_width = max(prompt[r] for r in micro), max(completion[r] for r in micro)
        prompt_rows = len(groups) if prompts_shared_often_enough(len(groups), len(micro)) else len(micro)
        total += prompt_rows * prompt_width + len(micro) * completion_width
    return total


def even_micro_batches(model: torch.nn.Module, rollout: Rollout, rows: list[int], size: int,
                       token_budget: int = 0) -> list[tuple[list[int], bool]]:
    """:func:`rollout_micro_batches` for no-grad forwards through ``model``, each with whether it is
    real: an FSDP2-sharded model's forwards are collectives, so every rank runs as many as the rank
    with the most, the others padded with forwards of one row whose result is dropped."""
    micros = rollout_micro_batches(rollout, rows, size, token_budget)
    count = even_count(len(micros), model)
    return [(micro, True) for micro in micros] + [([0], False)] * (count - len(micros))


@torch.no_grad()
def logprobs_without_grad(
    model: torch.nn.Module,
    rollout: Rollout,
    rows: list[int],
    micro_batch_size: int,
    autocast: Callable[[], AbstractContextManager],
    token_budget: int = 0,
) -> torch.Tensor:
    """Log-probs of the completions of ``rows`` under ``model`` (pi_old or reference), micro-batched. -> [N, T]"""
    device = rollout.completion_ids.device
    out = torch.zeros(rollout.completion_ids.shape, dtype=torch.float32, device=device)  # [N, T]
    for micro, real in even_micro_batches(model, rollout, rows, micro_batch_size, token_budget):
        prompt_ids, prompt_mask, completion_ids, completion_mask = batch_inputs(rollout, micro, device)
        with autocast():
            logprobs = completion_logprobs(
                model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=rollout.logprob_temperature
            )  # [n, T']
        if real:
            out[torch.tensor(micro, device=device), : logprobs.shape[1]] = logprobs
    return out
