"""Rewards for the built-in multi-step task (``cohort.data.multistep``): the outcome and the gold steps.

``FinalAnswerReward`` is the outcome reward: the number after the last ``=`` of the last step must
equal the row's answer, and the completion must keep the task's format (one ``a+b=c`` line per
operation, ``multistep.well_formed``), so merged or malformed lines score 0 for every method that
uses the rule. ``GoldStepScorer`` scores every step with the task's exact checker, with the same
interface and step alignment as ``ProcessRewardModel``, so it can stand in for a trained PRM
(``reward.process_model: {path: gold}``): the ground truth as a process reward.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from cohort.data.multistep import STEP_MARKER, check_steps, final_answer, parse_prompt, well_formed
from cohort.rewards.step_spans import StepScores, split_steps, token_ends

_PROBLEM = re.compile(r"[0-9]+(?:[+-][0-9]+)+=")


class FinalAnswerReward:
    """1.0 when the completion's final answer (``multistep.final_answer``) equals the row's answer and
    the completion keeps the task's format (``multistep.well_formed``); else 0.0.

    ``strict_format=False`` checks the final answer only (the rule before merged lines were refused).
    A row without an answer scores None (left out of its group).
    """

    is_correctness = True

    def __init__(self, answer_column: str = "answer", strict_format: bool = True) -> None:
        self.answer_column = answer_column
        self.strict_format = strict_format
        self.__name__ = "final_answer"

    def extract_answer(self, completion: str) -> str | None:
        """The answer majority voting compares: the last step's result, or None."""
        return final_answer(completion)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        if self.answer_column not in columns:
            raise KeyError(f"final_answer needs the dataset column {self.answer_column!r}; got {sorted(columns)}")
        return [
            None if answer is None else float(
                final_answer(completion) == str(answer).strip()
                and (not self.strict_format or well_formed(_problem(prompt) or "", completion))
            )
            for prompt, completion, answer in zip(prompts, completions, columns[self.answer_column])
        ]


def _problem(prompt: Any) -> str | None:
    """The multi-step problem a prompt asks (``"12+7-5+30="``): the prompt itself, or the last such
    problem in a longer text prompt (a template around it); None for anything else."""
    if not isinstance(prompt, str):
        return None
    try:
        parse_prompt(prompt)
        return prompt
    except ValueError:
        found = _PROBLEM.findall(prompt)
        return found[-1] if found else None


class GoldStepScorer:
    """Scores each step 1.0 / 0.0 with the gold checker ``multistep.check_steps`` (a PRM with perfect labels).

    Called like ``ProcessRewardModel``: ``(prompts, completions, completion_ids) -> [StepScores | None]``.
    Steps are found with ``split_steps`` at ``marker`` and located in the policy's tokens with
    ``token_ends``, exactly as the PRM does, so the two give the same ``ends``. A prompt that holds no
    multi-step problem (``"12+7-5+30="``, alone or at the end of a template) scores None.
    """

    def __init__(self, tokenizer, marker: str = STEP_MARKER) -> None:
        if not marker:
            raise ValueError("the step marker must be a non-empty string")
        self.tokenizer = tokenizer
        self.marker = marker

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[str], completion_ids: Sequence[Sequence[int]]
    ) -> list[StepScores | None]:
        scores: list[StepScores | None] = []
        for prompt, text, ids in zip(prompts, completions, completion_ids):
            problem = _problem(prompt)
            if problem is None:
                scores.append(None)
                continue
            spans = split_steps(text, self.marker)
            verdicts = check_steps(problem, text, self.marker)
            if len(verdicts) != len(spans):  # the two splits agree by construction; guard the alignment
                raise AssertionError(f"{len(verdicts)} verdicts for {len(spans)} steps in {text!r}")
            rewards = [float(ok) for ok in verdicts]
            scores.append(StepScores(rewards, token_ends(self.tokenizer, ids, [end for _, end in spans])))
        return scores
