"""Built-in rewards for verifiable tasks: exact answer match, output format, DAPO's overlong penalty.

Correctness rewards set ``is_correctness = True`` (the trainer reports their rate as ``accuracy``)
and offer ``extract_answer`` (majority voting in evaluation compares extracted answers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

R1_FORMAT = r"<think>.*?</think>\s*<answer>.*?</answer>"


class ExactMatch:
    """1.0 when the completion, stripped of surrounding whitespace, equals the row's answer; else 0.0."""

    is_correctness = True

    def __init__(self, answer_column: str = "answer") -> None:
        self.answer_column = answer_column
        self.__name__ = "exact_match"

    def extract_answer(self, completion: str) -> str | None:
        text = completion.strip()
        return text or None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        if self.answer_column not in columns:
            raise KeyError(f"exact_match needs the dataset column {self.answer_column!r}; got {sorted(columns)}")
        answers = columns[self.answer_column]
        return [
            None if answer is None else float(completion.strip() == str(answer).strip())
            for completion, answer in zip(completions, answers)
        ]


class FormatReward:
    """1.0 when the whole stripped completion matches ``pattern`` (default: R1's think/answer tags)."""

    def __init__(self, pattern: str = R1_FORMAT) -> None:
        try:
            self.pattern = re.compile(pattern, re.DOTALL)
        except re.error as err:
            raise ValueError(f"format reward: pattern {pattern!r} is not a valid regular expression: {err}") from None
        self.__name__ = "format"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float]:
        return [float(self.pattern.fullmatch(completion.strip()) is not None) for completion in completions]


class SoftOverlongPunishment:
    """DAPO Eq. 13: 0 up to ``max_length - buffer`` tokens, then linearly down to -1 at ``max_length``."""

    def __init__(self, max_length: int, buffer: int) -> None:
        if not 0 < buffer <= max_length:
            raise ValueError(f"soft overlong punishment needs 0 < buffer <= max_length, got {buffer}, {max_length}")
        self.max_length = max_length
        self.buffer = buffer
        self.__name__ = "soft_overlong"

    def penalty(self, length: int) -> float:
        if length <= self.max_length - self.buffer:
            return 0.0
        if length <= self.max_length:
            return ((self.max_length - self.buffer) - length) / self.buffer
        return -1.0

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float]:
        if "completion_ids" not in columns:
            raise KeyError("soft_overlong needs completion_ids (token ids of each completion)")
        return [self.penalty(len(ids)) for ids in columns["completion_ids"]]
