"""Held-out evaluation: greedy accuracy, unbiased pass@k, maj@k, mean reward, length, truncation.

Each problem gets one greedy completion and ``n`` sampled ones. ``pass@k`` uses the unbiased
estimator over the n samples (docs/spec.md §9.1); ``maj@k`` votes over the first k samples' extracted
answers and scores the winning answer's correctness (docs/spec.md §9.2: no answer = no vote; ties go to
the answer seen first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch

from cohort.algo import majority_answer, pass_at_k
from cohort.rewards import NamedReward, RewardScorer
from cohort.rollout import Rollout, SamplingParams
from cohort.rollout.engines import NATIVE, RolloutEngine


@dataclass
class ProblemResult:
    """Everything sampled and scored for one held-out problem."""

    index: int
    prompt: Any
    answer: Any
    greedy_completion: str
    greedy_correct: bool
    completions: list[str]
    correct: list[bool]
    rewards: list[float | None]
    answers: list[str | None]
    lengths: list[int]
    truncated: list[bool]


@dataclass
class EvalSummary:
    """Aggregates over the problems of one evaluation."""

    num_problems: int
    num_samples: int
    temperature: float
    greedy_accuracy: float
    pass_at_k: dict[int, float]
    maj_at_k: dict[int, float]
    mean_reward: float
    mean_length: float
    truncation_rate: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pass_at_k"] = {str(k): v for k, v in self.pass_at_k.items()}
        data["maj_at_k"] = {str(k): v for k, v in self.maj_at_k.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvalSummary":
        values = dict(data)
        values["pass_at_k"] = {int(k): v for k, v in data["pass_at_k"].items()}
        values["maj_at_k"] = {int(k): v for k, v in data["maj_at_k"].items()}
        return cls(**values)


def default_ks(num_samples: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= num_samples:
        ks.append(k)
        k *= 2
    if ks[-1] != num_samples:
        ks.append(num_samples)
    return ks


def _is_correct(value: float) -> bool:
    return not math.isnan(value) and value >= 1.0 - 1e-9


def evaluate(
    model,
    tokenizer,
    prompts: Sequence[Any],
    prompt_ids: Sequence[Sequence[int]],
    columns: Mapping[str, Sequence[Any]],
    *,
    correctness: NamedReward,
    scorer: RewardScorer,
    params: SamplingParams,
    num_samples: int,
    generator: torch.Generator,
    ks: Sequence[int] | None = None,
    prompts_per_batch: int = 64,
    answer_column: str = "answer",
    on_progress: Callable[[int, int], None] | None = None,
    engine: RolloutEngine = NATIVE,
) -> tuple[EvalSummary, list[ProblemResult]]:
    """Evaluate ``model`` on problems given as prompts (for rewards) and their token ids; ``engine``
    (the run's rollout engine) generates.

    ``correctness`` decides right/wrong (score 1 = correct) and extracts answers for voting;
    ``scorer`` gives the mean reward. ``columns`` are the problems' dataset columns.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if len(prompts) != len(prompt_ids) or not prompts:
        raise ValueError("prompts and prompt_ids must be non-empty and of one length")
    ks = sorted(set(ks or default_ks(num_samples)))
    if ks[0] < 1 or ks[-1] > num_samples:
        raise ValueError(f"every k must lie in [1, num_samples={num_samples}], got {ks}")
    greedy = SamplingParams(
        temperature=0.0,
        max_new_tokens=params.max_new_tokens,
        eos_token_ids=params.eos_token_ids,
        stop_strings=params.stop_strings,
    )
    results: list[ProblemResult] = []
    total = len(prompts)
    for start in range(0, total, prompts_per_batch):
        stop = min(start + prompts_per_batch, total)
        batch = _Problems(start, list(prompts[start:stop]), list(prompt_ids[start:stop]),
                          {key: list(values[start:stop]) for key, values in columns.items()})
        common = dict(pad_token_id=tokenizer.pad_token_id, generator=generator, tokenizer=tokenizer)
        generate = partial(engine.generate, model)
        greedy_texts, greedy_scores = _greedy(generate, tokenizer, batch, greedy, scorer, correctness, common)
        results += _sampled_results(generate, tokenizer, batch, params, num_samples, scorer, correctness, common,
                                    greedy_texts, greedy_scores, answer_column)
        if on_progress is not None:
            on_progress(stop, total)
    return summarize(results, ks, params.temperature), results


@dataclass(frozen=True)
class _Problems:
    """One batch of problems: where it starts, its prompts (for rewards), token ids and dataset columns."""

    start: int
    prompts: list[Any]
    ids: list[Sequence[int]]
    columns: dict[str, list[Any]]


def _greedy(generate: Callable[..., Rollout], tokenizer, batch: _Problems, greedy: SamplingParams, scorer: RewardScorer, correctness: NamedReward,
            common: dict[str, Any]) -> tuple[list[str], list[float]]:
    """Greedy completions of the batch and their correctness scores."""
    rollout = generate(batch.ids, 1, greedy, **common)
    texts = rollout.decode_completions(tokenizer)
    columns = {**batch.columns, "completion_ids": rollout.completion_token_lists()}
    return texts, scorer.score(batch.prompts, texts, columns).per_function[correctness.name].tolist()


def _sampled_results(generate: Callable[..., Rollout], tokenizer, batch: _Problems, params: SamplingParams, num_samples: int, scorer: RewardScorer,
                     correctness: NamedReward, common: dict[str, Any], greedy_texts: list[str], greedy_scores: list[float],
                     answer_column: str) -> list[ProblemResult]:
    """``num_samples`` sampled completions per problem, scored, as one ProblemResult per problem."""
    extract = getattr(correctness.fn, "extract_answer", None)
    sampled = generate(batch.ids, num_samples, params, **common)
    texts = sampled.decode_completions(tokenizer)
    expanded = {key: [v for v in values for _ in range(num_samples)] for key, values in batch.columns.items()}
    expanded["completion_ids"] = sampled.completion_token_lists()
    scores = scorer.score([p for p in batch.prompts for _ in range(num_samples)], texts, expanded)
    correct_values = scores.per_function[correctness.name].tolist()
    lengths, truncated = sampled.completion_lengths.tolist(), sampled.truncated.tolist()
    answers = batch.columns.get(answer_column, [None] * len(batch.prompts))
    results = []
    for offset in range(len(batch.prompts)):
        rows = slice(offset * num_samples, (offset + 1) * num_samples)
        results.append(ProblemResult(
            index=batch.start + offset,
            prompt=batch.prompts[offset],
            answer=answers[offset],
            greedy_completion=greedy_texts[offset],
            greedy_correct=_is_correct(greedy_scores[offset]),
            completions=texts[rows],
            correct=[_is_correct(v) for v in correct_values[rows]],
            rewards=[None if math.isnan(v) else v for v in scores.total[rows].tolist()],
            answers=[extract(t) if extract else t.strip() or None for t in texts[rows]],
            lengths=lengths[rows],
            truncated=truncated[rows],
        ))
    return results


def summarize(results: Sequence[ProblemResult], ks: Sequence[int], temperature: float) -> EvalSummary:
    """Aggregate per-problem results into pass@k, maj@k and the rest."""
    n = len(results[0].completions)
    counts = torch.tensor([len(r.completions) for r in results])
    correct = torch.tensor([sum(r.correct) for r in results])
    pass_values = {k: float(pass_at_k(counts, correct, k).mean()) for k in ks}
    maj_values = {}
    for k in ks:
        hits = 0
        for r in results:
            winner = majority_answer(r.answers[:k])
            if winner is not None:
                hits += r.correct[r.answers.index(winner)]
        maj_values[k] = hits / len(results)
    rewards = [v for r in results for v in r.rewards if v is not None]
    lengths = [length for r in results for length in r.lengths]
    truncated = [t for r in results for t in r.truncated]
    return EvalSummary(
        num_problems=len(results),
        num_samples=n,
        temperature=temperature,
        greedy_accuracy=sum(r.greedy_correct for r in results) / len(results),
        pass_at_k=pass_values,
        maj_at_k=maj_values,
        mean_reward=sum(rewards) / len(rewards) if rewards else float("nan"),
        mean_length=sum(lengths) / len(lengths),
        truncation_rate=sum(truncated) / len(truncated),
    )
