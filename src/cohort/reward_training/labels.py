"""Automatic labels for reward-model training: outcome labels from the task's rule, and step labels
by Monte-Carlo completion in the manner of Math-Shepherd (Wang et al., arXiv:2312.08935).

A step is as good as the answers the policy reaches from it: from the prefix that ends with step
k, sample N continuations with the current policy and judge each (prefix + continuation) with the
task's correctness rule. The *hard* label is 1 when any of the N reaches the right answer, the
*soft* label the fraction that do. The last step's prefix is the whole completion, so its label is
the completion's own correctness: no sampling is spent on it (this saves N rollouts per
completion). All prefixes of all completions are sampled together through the run's rollout
engine (the native one prefills each prefix once and shares its KV cache among its N samples; vLLM
caches prefixes itself); ``max_prefixes_per_batch`` bounds the rows decoded at once (prefixes x N).

Prefix k is the prompt's ids (``cohort.models.encode_prompts``) followed by the tokens of the
completion text up to the end of step k, exactly as the completion has it (whatever separated the
steps stays), so the continuation starts where the policy stood: its next token is the step
marker. The text prefix is re-tokenised; for tokenizers where that is not the identity (merges
across the step boundary) the prefix tokens can differ from the ones the policy sampled.

The correctness rule is either a plain ``fn(text, answer) -> bool`` or a cohort reward callable
with ``is_correctness`` (``fn(prompts, completions, answer=..., **columns)``, a sample is right
when it scores 1, as in the trainer's accuracy).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from cohort.models.prompts import Prompt, encode_prompts
from cohort.reward_training.examples import OutcomeExample, ProcessExample, check_prompt
from cohort.rewards.process_model import split_steps
from cohort.rollout import SamplingParams
from cohort.rollout.engines import NATIVE, RolloutEngine

Correctness = Callable[..., Any]


@dataclass(frozen=True)
class StepLabels:
    """Monte-Carlo labels of one completion's steps (the stripped steps the PRM reads).

    ``hard[k]`` is 1.0 when a continuation from the prefix ending at step k reached the right
    answer, ``soft[k]`` the fraction that did; the last step's both equal ``correct``, the
    completion's own outcome. ``rollouts[k]`` is how many continuations step k cost (0 for the last).
    """

    steps: tuple[str, ...]
    hard: tuple[float, ...]
    soft: tuple[float, ...]
    rollouts: tuple[int, ...]
    correct: bool


@dataclass(frozen=True)
class LabellingCost:
    """What the labelling cost: sampled continuations, generated tokens and wall-clock seconds."""

    completions: int
    steps: int
    prefixes: int  # prefixes sampled from (every step but each completion's last)
    rollouts: int  # prefixes x N
    generated_tokens: int
    seconds: float
    generation_seconds: float
    judge_seconds: float

    def per_completion(self) -> dict[str, float]:
        """Average cost of labelling one completion."""
        count = max(self.completions, 1)
        return {"seconds": self.seconds / count, "generated_tokens": self.generated_tokens / count,
                "rollouts": self.rollouts / count}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_completion": self.per_completion()}


@dataclass(frozen=True)
class StepLabelling:
    """Step labels of every completion, in order, and the cost of getting them."""

    labels: list[StepLabels]
    cost: LabellingCost

    def process_examples(self, prompts: Sequence[Prompt], *, soft: bool = False) -> list[ProcessExample]:
        """Training examples for a PRM (hard labels, or soft ones); completions without steps are left out."""
        return [
            ProcessExample(check_prompt(prompt, f"prompt {index}"), item.steps, item.soft if soft else item.hard)
            for index, (prompt, item) in enumerate(zip(prompts, self.labels))
            if item.steps
        ]


def _is_right(score: Any) -> bool:
    return score is not None and not math.isnan(float(score)) and float(score) >= 1.0 - 1e-9


class _Judge:
    """Applies the correctness rule to texts written for given completions (by index)."""

    def __init__(self, correct: Correctness, prompts: Sequence[Any], answers: Sequence[Any],
                 columns: Mapping[str, Sequence[Any]] | None) -> None:
        if not callable(correct):
            raise ValueError(f"the correctness rule must be callable, got {type(correct).__name__}")
        self.correct, self.prompts, self.answers = correct, list(prompts), list(answers)
        self.columns = {"answer": self.answers, **{k: list(v) for k, v in (columns or {}).items()}}
        for name, values in self.columns.items():
            if len(values) != len(self.prompts):
                raise ValueError(f"column {name!r} has {len(values)} values for {len(self.prompts)} prompts")
        self.is_reward = bool(getattr(correct, "is_correctness", False))

    def __call__(self, owners: Sequence[int], texts: Sequence[str]) -> list[bool]:
        if not self.is_reward:
            return [bool(self.correct(text, self.answers[i])) for i, text in zip(owners, texts)]
        columns = {name: [values[i] for i in owners] for name, values in self.columns.items()}
        scores = self.correct([self.prompts[i] for i in owners], list(texts), **columns)
        if len(scores) != len(texts):
            raise ValueError(f"the correctness reward returned {len(scores)} scores for {len(texts)} completions")
        return [_is_right(score) for score in scores]


def outcome_labels(prompts: Sequence[Prompt], completions: Sequence[str], answers: Sequence[Any],
                   correct: Correctness, *, columns: Mapping[str, Sequence[Any]] | None = None) -> list[OutcomeExample]:
    """Outcome RM examples labelled by the task's rule: 1.0 for a right completion, 0.0 otherwise."""
    judge = _Judge(correct, prompts, answers, columns)
    verdicts = judge(range(len(completions)), completions)
    return [OutcomeExample(check_prompt(p, f"prompt {i}"), c, float(ok))
            for i, (p, c, ok) in enumerate(zip(prompts, completions, verdicts))]


def _check_request(prompts, completions, answers, rollouts: int, max_prefixes_per_batch: int) -> None:
    if not len(prompts) == len(completions) == len(answers):
        raise ValueError(f"got {len(prompts)} prompts, {len(completions)} completions and {len(answers)} answers; "
                         "give one of each per completion")
    if isinstance(rollouts, bool) or not isinstance(rollouts, int) or rollouts < 1:
        raise ValueError(f"rollouts (N continuations per prefix) must be an integer >= 1, got {rollouts!r}")
    if max_prefixes_per_batch < 1:
        raise ValueError(f"max_prefixes_per_batch must be >= 1, got {max_prefixes_per_batch}")


def monte_carlo_step_labels(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    completions: Sequence[str],
    answers: Sequence[Any],
    correct: Correctness,
    *,
    rollouts: int,
    params: SamplingParams,
    generator: torch.Generator,
    step_marker: str = "\n",
    chat: bool = False,
    columns: Mapping[str, Sequence[Any]] | None = None,
    max_prefixes_per_batch: int = 64,
    engine: RolloutEngine = NATIVE,
) -> StepLabelling:
    """Math-Shepherd step labels of each completion from ``rollouts`` (N) policy continuations per prefix.

    ``prompts[i]`` / ``answers[i]`` belong to ``completions[i]``; ``chat`` renders prompts with the
    chat template (as ``encode_prompts``). Deterministic for a given ``generator`` state and batch
    size; runs the model in its current mode (call ``.eval()`` first if it has dropout). ``engine``
    generates the continuations (the run's rollout engine).
    """
    start = time.perf_counter()
    _check_request(prompts, completions, answers, rollouts, max_prefixes_per_batch)
    judge = _Judge(correct, prompts, answers, columns)
    spans = [split_steps(text, step_marker) for text in completions]
    own = judge(range(len(completions)), completions)  # the last step's label: the completion's own outcome
    judge_seconds = time.perf_counter() - start
    prompt_ids = encode_prompts(tokenizer, prompts, chat=chat)
    pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)  # any id: padding is masked
    prefixes = [(i, completions[i][:end]) for i, s in enumerate(spans) for _, end in s[:-1]]
    right: list[int] = []
    tokens, generation_seconds = 0, 0.0
    for first in range(0, len(prefixes), max_prefixes_per_batch):
        chunk = prefixes[first : first + max_prefixes_per_batch]
        began = time.perf_counter()
        ids = [prompt_ids[i] + tokenizer(text, add_special_tokens=False)["input_ids"] for i, text in chunk]
        rollout = engine.generate(model, ids, rollouts, params, pad_token_id=pad, generator=generator, tokenizer=tokenizer)
        continuations = rollout.decode_completions(tokenizer)  # [len(chunk) * N], group-contiguous
        tokens += int(rollout.completion_lengths.sum())
        judged = time.perf_counter()
        texts = [text + continuations[j * rollouts + g] for j, (_, text) in enumerate(chunk) for g in range(rollouts)]
        verdicts = judge([i for i, _ in chunk for _ in range(rollouts)], texts)
        right.extend(sum(verdicts[j * rollouts : (j + 1) * rollouts]) for j in range(len(chunk)))
        generation_seconds += judged - began
        judge_seconds += time.perf_counter() - judged
    labels = _assemble(completions, spans, own, right, rollouts)
    cost = LabellingCost(
        completions=len(completions), steps=sum(len(s) for s in spans), prefixes=len(prefixes),
        rollouts=len(prefixes) * rollouts, generated_tokens=tokens, seconds=time.perf_counter() - start,
        generation_seconds=generation_seconds, judge_seconds=judge_seconds)
    return StepLabelling(labels, cost)


def _assemble(completions: Sequence[str], spans: list[list[tuple[int, int]]], own: list[bool],
              right: list[int], rollouts: int) -> list[StepLabels]:
    """Per-completion labels from the right-continuation counts of the prefixes (in prefix order)."""
    labels, cursor = [], 0
    for text, s, ok in zip(completions, spans, own):
        counts = right[cursor : cursor + max(len(s) - 1, 0)]
        cursor += len(counts)
        last = [float(ok)] if s else []
        labels.append(StepLabels(
            steps=tuple(text[a:b] for a, b in s),
            hard=tuple(float(c > 0) for c in counts) + tuple(last),
            soft=tuple(c / rollouts for c in counts) + tuple(last),
            rollouts=tuple(rollouts for _ in counts) + tuple(0 for _ in last),
            correct=ok,
        ))
    return labels
