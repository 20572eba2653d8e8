"""The built-in verifiable task: addition and subtraction of whole numbers below 100.

A problem reads ``"47+85="`` and its answer is ``"132"``; subtraction is written larger-first
(``"85-47="`` -> ``"38"``), so answers are never negative. The whole problem space (15,050
problems) is split once by a hash of the prompt text: about 10% is held out for evaluation and
can never be drawn for training, whatever the seed. Training problems and held-out problems are
both drawn uniformly from their part of the space, so the two splits have the same distribution.
The reward is exact match: the completion, stripped of special tokens and whitespace, equals
``answer``. Pure Python (no torch), deterministic for a given seed.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator

MAX_OPERAND = 99
"""Operands are whole numbers 0..MAX_OPERAND."""

OPERATORS = ("+", "-")

HELD_OUT_PERCENT = 10
"""Share of the problem space (chosen by prompt hash) reserved for evaluation."""

SPLITS = ("train", "test")

DEFAULT_NUM_TRAIN = 100_000
DEFAULT_NUM_TEST = 500


def make_problem(left: int, operator: str, right: int) -> dict[str, str]:
    """The row for ``left operator right``.

    >>> make_problem(47, "+", 85)
    {'prompt': '47+85=', 'answer': '132'}
    """
    if operator not in OPERATORS:
        raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
    if not (0 <= left <= MAX_OPERAND and 0 <= right <= MAX_OPERAND):
        raise ValueError(f"operands must be in 0..{MAX_OPERAND}, got {left} and {right}")
    if operator == "-" and left < right:
        raise ValueError(f"subtraction is written larger-first so the answer is >= 0, got {left}-{right}")
    result = left + right if operator == "+" else left - right
    return {"prompt": f"{left}{operator}{right}=", "answer": str(result)}


def split_of(prompt: str) -> str:
    """``"test"`` for the held-out share of prompts, ``"train"`` for the rest (stable SHA-256 hash).

    Depends on the prompt text only, never on a seed, so no seed can leak a held-out problem
    into training.
    """
    bucket = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") % 100
    return "test" if bucket < HELD_OUT_PERCENT else "train"


@functools.lru_cache(maxsize=None)
def _split_pool(split: str) -> tuple[tuple[str, str], ...]:
    pool = []
    for left in range(MAX_OPERAND + 1):
        for right in range(MAX_OPERAND + 1):
            for operator in OPERATORS:
                if operator == "-" and left < right:
                    continue
                problem = make_problem(left, operator, right)
                if split_of(problem["prompt"]) == split:
                    pool.append((problem["prompt"], problem["answer"]))
    return tuple(pool)


def split_problems(split: str) -> list[dict[str, str]]:
    """Every distinct problem of ``split`` (``"train"`` or ``"test"``), in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [{"prompt": prompt, "answer": answer} for prompt, answer in _split_pool(split)]


def iter_problems(split: str = "train", seed: int = 0) -> Iterator[dict[str, str]]:
    """Endless i.i.d. stream of problems drawn uniformly from ``split``, reproducible from ``seed``."""
    pool = split_problems(split)
    rng = random.Random(f"cohort-arithmetic/{split}/{seed}")
    while True:
        yield dict(rng.choice(pool))


def arithmetic_splits(
    seed: int = 0, num_train: int = DEFAULT_NUM_TRAIN, num_test: int = DEFAULT_NUM_TEST
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Training and held-out problems ``(train, test)``, disjoint by construction.

    ``train`` is the first ``num_train`` problems of ``iter_problems("train", seed)`` (repeats
    possible; use the iterator when an endless supply is needed). ``test`` is ``num_test``
    distinct held-out problems, a uniform random subset of the held-out split, so each counts
    once in an accuracy.
    """
    if num_train < 0:
        raise ValueError(f"num_train must be >= 0, got {num_train}")
    test_pool = split_problems("test")
    if not 0 <= num_test <= len(test_pool):
        raise ValueError(f"num_test must be in 0..{len(test_pool)} (the distinct held-out problems), got {num_test}")
    stream = iter_problems("train", seed)
    train = [next(stream) for _ in range(num_train)]
    test = random.Random(f"cohort-arithmetic/test-subset/{seed}").sample(test_pool, num_test)
    return train, test
