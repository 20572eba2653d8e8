"""Reward functions the trainer tests load by ``module:callable`` name, as a user would."""

from __future__ import annotations

import atexit
import os
from pathlib import Path


def digit_count(prompts, completions, **_):
    """Number of digits in the completion: varies across samples, so groups have signal."""
    return [float(sum(ch.isdigit() for ch in completion)) for completion in completions]


def fails_on_letter_a(prompts, completions, **_):
    """Raises whenever a completion contains 'a' (the run must survive it)."""
    if any("a" in completion for completion in completions):
        raise RuntimeError("this reward cannot handle the letter a")
    return [1.0 for _ in completions]


def length_score(prompts, completions, **_):
    return [float(len(completion)) for completion in completions]


def has_digit(prompts, completions, **_):
    """A lenient 'correctness' rule for tiny random models: 1 when the completion holds a digit.

    Marked as a correctness reward, so RFT keeps, DPO pairs and evaluation counts by it."""
    return [1.0 if any(ch.isdigit() for ch in completion) else 0.0 for completion in completions]


has_digit.is_correctness = True


def never_correct(prompts, completions, **_):
    """A correctness reward nothing satisfies (RFT must refuse to start with nothing to keep)."""
    return [0.0 for _ in completions]


never_correct.is_correctness = True


class SignalAtCall:
    """Scores like has_digit and, on its ``at``-th call, sends this process ``signal`` ``count`` times
    (a scheduler's preemption; ``count=2`` is an impatient user pressing Ctrl-C twice; ``SIGKILL``
    with ``rank`` set: one torchrun rank dies)."""

    is_correctness = True

    def __init__(self, at: int = 3, signal: str = "SIGTERM", count: int = 1, rank: int | None = None):
        self.at, self.signal, self.count, self.rank, self.calls = at, signal, count, rank, 0

    def __call__(self, prompts, completions, **_):
        import os
        import signal
        import time

        self.calls += 1
        on_this_rank = self.rank is None or int(os.environ.get("RANK", "0")) == self.rank
        if self.calls == self.at and on_this_rank:
            for _ in range(self.count):
                os.kill(os.getpid(), getattr(signal, self.signal))
                time.sleep(0.05)  # let the handler run before the next one arrives
        return has_digit(prompts, completions)


def dies_on_marker(prompts, completions, **_):
    """Scores like has_digit, but the process running it dies when a completion holds 'DIE' (a lost worker)."""
    import os

    if any("DIE" in completion for completion in completions):
        os._exit(1)
    return has_digit(prompts, completions)


def always_raises(prompts, completions, **_):
    """A reward with a bug that fires on every call: no sample can ever be scored."""
    raise KeyError("answer_text")


def always_none(prompts, completions, **_):
    """A reward that scores nothing and says nothing (returns None for every sample)."""
    return [None for _ in completions]


def correct_when_digit(prompts, completions, **_):
    """has_digit without the is_correctness attribute: the config's ``correctness: true`` marks it."""
    return [1.0 if any(ch.isdigit() for ch in completion) else 0.0 for completion in completions]


def _note_exit() -> None:
    """Leave ``exit-rank-<RANK>`` in $COHORT_TEST_EXIT_DIR when this process's atexit handlers run
    (tests/test_distributed.py: a torchrun rank that ends with os._exit still runs them)."""
    Path(os.environ["COHORT_TEST_EXIT_DIR"], f"exit-rank-{os.environ.get('RANK', '0')}").write_text("atexit ran\n")


if os.environ.get("COHORT_TEST_EXIT_DIR"):
    atexit.register(_note_exit)
