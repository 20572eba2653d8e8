"""Steps of a completion: where they are in the text and in the policy's tokens, and their scores.

Shared by everything that scores steps (a process reward model, the multi-step task's gold
checker) and by the GRPO method that turns step scores into token advantages. No model is loaded
here. A step's end in the policy's tokens is the 1-based index of the token that completes it; a
token that spans two step ends (a tokenizer that merges across the step marker) gives two steps the
same end, which :func:`step_tensors` reports as a completion that cannot be scored, never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cohort.algo import step_problems


@dataclass(frozen=True)
class StepScores:
    """A completion's step rewards and the 1-based index of each step's last policy token."""

    rewards: list[float]
    ends: list[int]


def split_steps(text: str, marker: str = "\n") -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the non-blank steps of ``text`` split at ``marker``.

    Surrounding whitespace is not part of a step.

    >>> split_steps("a = 1\\n\\nb = 2\\n", "\\n")
    [(0, 5), (7, 12)]
    """
    if not marker:
        raise ValueError("the step marker must be a non-empty string")
    spans, start = [], 0
    for piece in text.split(marker):
        stripped = piece.strip()
        if stripped:
            begin = start + piece.index(stripped)
            spans.append((begin, begin + len(stripped)))
        start += len(piece) + len(marker)
    return spans


def token_ends(tokenizer, completion_ids: Sequence[int], char_ends: Sequence[int]) -> list[int]:
    """For each character offset (exclusive end of a step in the decoded completion), the 1-based index
    of the policy token that completes it, found by binary search over decoded prefixes.

    Every index lies in ``[1, len(completion_ids)]`` (clamped: a step the decoded tokens never reach,
    or one completed by the same token as the step before, ends at the last candidate token); two
    steps may therefore share an end, which :func:`step_tensors` catches.
    """
    ids = list(completion_ids)
    if not ids:
        return [1 for _ in char_ends]  # no token to point at: step_tensors marks the sample unscorable

    def decoded_length(count: int) -> int:
        return len(tokenizer.decode(ids[:count], skip_special_tokens=True))

    ends, low = [], 1
    for char_end in char_ends:
        lo, hi = min(low, len(ids)), len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if decoded_length(mid) >= char_end:
                hi = mid
            else:
                lo = mid + 1
        ends.append(lo)
        low = lo + 1
    return ends


def step_tensors(
    scores: Sequence[StepScores | None], completion_lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad per-completion step scores for ``cohort.algo.process_advantages``.

    -> (step_rewards [N, K] float64, step_ends [N, K] long, step_mask [N, K] bool, scored [N] bool);
    ``None`` (the scorer could not score that completion) gives no steps and ``scored = False``. With
    ``completion_lengths`` ([N]), a completion whose step ends are not strictly increasing within
    ``[1, |o_i|]`` (docs/spec.md §10.11) is dropped the same way, so it is left out of its group
    instead of stopping the step.
    """
    width = max([len(s.rewards) for s in scores if s is not None] + [1])
    rewards = torch.zeros(len(scores), width, dtype=torch.float64)  # [N, K]
    ends = torch.ones(len(scores), width, dtype=torch.long)  # [N, K]
    mask = torch.zeros(len(scores), width, dtype=torch.bool)  # [N, K]
    scored = torch.tensor([item is not None for item in scores], dtype=torch.bool)  # [N]
    for row, item in enumerate(scores):
        if item is None or not item.rewards:
            continue
        if len(item.ends) != len(item.rewards):
            scored[row] = False
            continue
        k = len(item.rewards)
        rewards[row, :k] = torch.tensor(item.rewards, dtype=torch.float64)
        ends[row, :k] = torch.tensor(item.ends, dtype=torch.long)
        mask[row, :k] = True
    if completion_lengths is not None:
        bad = step_problems(ends, mask, completion_lengths.to(ends.device))  # [N]
        scored = scored & ~bad
        mask = mask & ~bad.unsqueeze(1)
    return rewards, ends, mask, scored
