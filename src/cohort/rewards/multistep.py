"""Rewards for the built-in multi-step task (``cohort.data.multistep``): the outcome and the gold steps.

``FinalAnswerReward`` is the outcome reward: the number after the last ``=`` of the last step must
equal the row's answer. ``GoldStepScorer`` scores every step with the task's exact checker, with
the same interface and step alignment as ``ProcessRewardModel``, so it can stand in for a trained
PRM when one wants the ground truth (tests, analysis, an upper bound for process supervision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cohort.data.multistep import STEP_MARKER, check_steps, final_answer
from cohort.rewards.process_model import StepScores, split_steps, token_ends


class FinalAnswerReward:
    """1.0 when the completion's final answer (``multistep.final_answer``) equals the row's answer; else 0.0.

    A row without an answer scores None (left out of its group).
    """

    is_correctness = True

    def __init__(self, answer_column: str = "answer") -> None:
        self.answer_column = answer_column
        self.__name__ = "final_answer"

    def extract_answer(self, completion: str) -> str | None:
        """The answer majority voting compares: the last step's result, or None."""
        return final_answer(completion)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        if self.answer_column not in columns:
            raise KeyError(f"final_answer needs the dataset column {self.answer_column!r}; got {sorted(columns)}")
        return [
            None if answer is None else float(final_answer(completion) == str(answer).strip())
            for completion, answer in zip(completions, columns[self.answer_column])
        ]


class GoldStepScorer:
    """Scores each step 1.0 / 0.0 with the gold checker ``multistep.check_steps`` (a PRM with perfect labels).

    Called like ``ProcessRewardModel``: ``(prompts, completions, completion_ids) -> [StepScores]``.
    Steps are found with ``split_steps`` at ``marker`` and located in the policy's tokens with
    ``token_ends``, exactly as the PRM does, so the two give the same ``ends``. Prompts must be
    the task's plain-text prompts (``"12+7-5+30="``).
    """

    def __init__(self, tokenizer, marker: str = STEP_MARKER) -> None:
        if not marker:
            raise ValueError("the step marker must be a non-empty string")
        self.tokenizer = tokenizer
        self.marker = marker

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[str], completion_ids: Sequence[Sequence[int]]
    ) -> list[StepScores]:
        scores = []
        for prompt, text, ids in zip(prompts, completions, completion_ids):
            spans = split_steps(text, self.marker)
            verdicts = check_steps(prompt, text, self.marker)
            if len(verdicts) != len(spans):  # the two splits agree by construction; guard the alignment
                raise AssertionError(f"{len(verdicts)} verdicts for {len(spans)} steps in {text!r}")
            rewards = [float(ok) for ok in verdicts]
            scores.append(StepScores(rewards, token_ends(self.tokenizer, ids, [end for _, end in spans])))
        return scores
