"""Reward functions the trainer tests load by ``module:callable`` name, as a user would."""

from __future__ import annotations


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
