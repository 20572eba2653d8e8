"""Built-in rewards for verifiable tasks: exact answer match, output format, DAPO's overlong penalty.

Correctness rewards set ``is_correctness = True`` (the trainer reports their rate as ``accuracy``)
and offer ``extract_answer`` (majority voting in evaluation compares extracted answers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import regex

logger = logging.getLogger(__name__)

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
    """1.0 when the whole stripped completion matches ``pattern`` (default: R1's think/answer tags), else 0.0.

    The pattern is the user's and the text the policy's, and a pattern that backtracks badly can run
    for minutes in the regex engine's C code, where no signal reaches it. So matching uses the
    ``regex`` package, whose matcher checks its own ``timeout_s`` (per completion) as it runs: past
    it the completion scores 0.0 (one warning per call). ``regex`` reads the ``re`` syntax.
    """

    def __init__(self, pattern: str = R1_FORMAT, timeout_s: float = 0.5) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < float("inf"):
            raise ValueError(f"format reward: timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
        try:
            self.pattern = regex.compile(pattern, regex.DOTALL)
        except regex.error as err:
            raise ValueError(f"format reward: pattern {pattern!r} is not a valid regular expression: {err}") from None
        self.timeout_s = float(timeout_s)
        self.__name__ = "format"

    def _matches(self, completion: str) -> float | None:
        try:
            return float(self.pattern.fullmatch(completion.strip(), timeout=self.timeout_s) is not None)
        except TimeoutError:
            return None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float]:
        scores = [self._matches(completion) for completion in completions]
        late = sum(score is None for score in scores)
        if late:
            logger.warning("format: matching %r ran past %g s on %d of %d completions; they score 0",
                           self.pattern.pattern, self.timeout_s, late, len(scores))
        return [0.0 if score is None else score for score in scores]


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
