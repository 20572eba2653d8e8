"""Watches over a run's first and every step that turn a run that measures nothing into one line.

* :class:`TruncationWatch` warns once when most completions of the first steps hit the generation
  budget (the rewards then measure the budget, not the policy).
* :class:`RewardFailureWatch` stops a run whose rewards scored no sample at all for
  ``reward.max_failed_steps`` consecutive steps: such steps train nothing (every sample is unscored),
  so going on would only spend time and end with exit code 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cohort.training.metrics import BatchFacts


class TruncationWatch:
    """Warns once when most completions of a run's first steps hit the generation budget: their
    answers are cut off, so the rewards mostly measure the budget, not the policy."""

    STEPS = 3
    SHARE = 0.5

    def __init__(self, warn: Callable[[str], None], budget: int) -> None:
        self.warn, self.budget = warn, budget
        self.seen: list[float] = []

    def observe(self, step: int, truncated_frac: float) -> None:
        if len(self.seen) >= self.STEPS:
            return
        self.seen.append(truncated_frac)
        share = sum(self.seen) / len(self.seen)
        if len(self.seen) == self.STEPS and share > self.SHARE:
            self.warn(f"{share:.0%} of the completions of steps {step - self.STEPS + 1}-{step} hit "
                      f"rollout.max_new_tokens={self.budget} and were cut off: raise rollout.max_new_tokens")


class RewardsFailed(ValueError):
    """Every sample's reward failed for ``reward.max_failed_steps`` steps in a row: the run stops."""


class RewardFailureWatch:
    """Counts consecutive steps whose global batch has reward functions but not one scored sample
    (every total None/NaN: the functions raised, timed out, returned None, NaN, ±inf or a list of the
    wrong length); at ``limit`` such steps :meth:`check` raises :class:`RewardsFailed` naming each
    function and its first error. ``limit`` 0 never stops. Batches without reward functions (SFT
    targets, preference pairs) are not watched."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failed_steps: list[int] = []
        self.errors: dict[str, str] = {}
        self.functions: list[str] = []

    def observe(self, step: int, facts: BatchFacts) -> None:
        if not facts.per_function:
            return
        if bool((~torch.isnan(facts.total)).any()):
            self.failed_steps, self.errors = [], {}
            return
        self.failed_steps.append(step)
        self.functions = list(facts.per_function)
        for name, error in facts.first_errors.items():
            self.errors.setdefault(name, error)

    def check(self) -> None:
        if not self.limit or len(self.failed_steps) < self.limit:
            return
        first, last = self.failed_steps[0], self.failed_steps[-1]
        causes = "; ".join(f"reward {name!r}: {self.errors.get(name, 'returned None or NaN for every sample')}"
                           for name in self.functions)
        raise RewardsFailed(f"no sample could be scored in steps {first}-{last}, so nothing trained ({causes}); "
                            f"stopping (reward.max_failed_steps={self.limit}; 0 never stops)")
