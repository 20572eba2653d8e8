"""The reward protocol and the scorer that runs several weighted reward functions safely.

A reward function is any callable ``fn(prompts, completions, **dataset_columns) -> list[float | None]``
(TRL's convention); it is called with keyword arguments and also receives ``completion_ids``.
``None`` (or NaN) means "could not score" (docs/spec.md §10.7). A function that raises, returns something
malformed, or runs past its time limit scores ``None`` for the affected samples — the run goes on —
unless ``strict`` is set, in which case :class:`RewardFunctionError` is raised.
"""

from __future__ import annotations

import logging
import math
import numbers
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

RewardFn = Callable[..., Sequence[float | None]]


class RewardFunctionError(RuntimeError):
    """A reward function failed and ``strict`` mode asked for the run to stop."""


class RewardTimeout(BaseException):
    """A reward call ran past its time limit.

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` inside a reward function
    (or a library it calls) cannot swallow it; the scorer catches it explicitly.
    """


@dataclass(frozen=True)
class NamedReward:
    """A reward function with the name it is logged under and its weight in the total reward."""

    name: str
    fn: RewardFn
    weight: float = 1.0


@dataclass
class RewardScores:
    """Scores of one batch. NaN marks samples a function could not score."""

    total: torch.Tensor  # [N] float64: sum of weight x score; NaN if a weighted function gave None
    per_function: dict[str, torch.Tensor]  # name -> [N] float64
    failures: dict[str, int] = field(default_factory=dict)  # name -> samples lost to errors/timeouts


@contextmanager
def _alarm(seconds: float):
    """Interrupt the enclosed Python code after ``seconds`` with RewardTimeout (main thread, Unix)."""

    def on_alarm(signum, frame):
        raise RewardTimeout(f"exceeded its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def call_with_time_limit(fn: Callable[[], Any], seconds: float) -> Any:
    """Run ``fn()``; raise RewardTimeout past ``seconds``.

    In the main thread a SIGALRM interrupts the call itself. Elsewhere the call runs in a daemon
    thread that is abandoned (not killed) when it overruns — Python offers no safe way to stop it.
    """
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        with _alarm(seconds):
            return fn()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # handed to the caller below
            result["error"] = err

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise RewardTimeout(f"exceeded its time limit of {seconds:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _checked_scores(name: str, output: Any, expected: int) -> list[float]:
    """The function's output as floats (NaN for None); ValueError if it is malformed."""
    if isinstance(output, torch.Tensor):
        output = output.tolist()
    if isinstance(output, (str, bytes)) or not isinstance(output, Sequence):
        raise ValueError(f"returned {type(output).__name__}, expected a list of {expected} floats or None")
    if len(output) != expected:
        raise ValueError(f"returned {len(output)} scores for {expected} completions")
    scores = []
    for i, value in enumerate(output):
        if value is None:
            scores.append(math.nan)
        elif isinstance(value, numbers.Real):
            scores.append(float(value))
        else:
            raise ValueError(f"score {i} is {value!r}; expected a float or None")
    return scores


def _slice_columns(columns: dict[str, Sequence[Any]], index: int) -> dict[str, list[Any]]:
    return {key: [values[index]] for key, values in columns.items()}


class RewardScorer:
    """Runs weighted reward functions over a batch, isolating failures to the samples they hit."""

    def __init__(self, rewards: Sequence[NamedReward], timeout_s: float = 60.0, strict: bool = False) -> None:
        if not rewards:
            raise ValueError("at least one reward function is needed")
        names = [r.name for r in rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"reward names must be unique, got {names}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.rewards = list(rewards)
        self.timeout_s = timeout_s
        self.strict = strict

    def _call(self, reward: NamedReward, prompts, completions, columns) -> list[float]:
        output = call_with_time_limit(
            lambda: reward.fn(prompts=list(prompts), completions=list(completions), **columns), self.timeout_s
        )
        return _checked_scores(reward.name, output, len(completions))

    def _score_one_function(self, reward: NamedReward, prompts, completions, columns) -> tuple[list[float], int]:
        """Scores of one function; on failure retry sample by sample so one bad sample costs only itself."""
        try:
            return self._call(reward, prompts, completions, columns), 0
        except (Exception, RewardTimeout) as err:  # any failure of user code is contained here
            if self.strict:
                raise RewardFunctionError(f"reward function {reward.name!r} failed: {err}") from err
            logger.warning("reward %r failed on a batch of %d (%s); scoring sample by sample", reward.name, len(completions), err)
            if len(completions) == 1:
                return [math.nan], 1
        scores, failures, timeouts_in_a_row = [], 0, 0
        for i in range(len(completions)):
            if timeouts_in_a_row >= 2:  # a function that hangs on everything: stop paying for it
                scores.append(math.nan)
                failures += 1
                continue
            try:
                scores.extend(self._call(reward, prompts[i : i + 1], completions[i : i + 1], _slice_columns(columns, i)))
                timeouts_in_a_row = 0
            except (Exception, RewardTimeout) as err:
                timeouts_in_a_row = timeouts_in_a_row + 1 if isinstance(err, RewardTimeout) else 0
                logger.warning("reward %r could not score sample %d: %s", reward.name, i, err)
                scores.append(math.nan)
                failures += 1
        return scores, failures

    def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[str],
        columns: dict[str, Sequence[Any]] | None = None,
    ) -> RewardScores:
        """Score a batch. ``columns`` are per-sample dataset columns (and ``completion_ids``)."""
        columns = dict(columns or {})
        n = len(completions)
        if len(prompts) != n or any(len(values) != n for values in columns.values()):
            raise ValueError(f"prompts and every column must hold {n} entries, one per completion")
        per_function, failures = {}, {}
        total = torch.zeros(n, dtype=torch.float64)
        for reward in self.rewards:
            values, failed = self._score_one_function(reward, prompts, completions, columns)
            scores = torch.tensor(values, dtype=torch.float64)  # [N]
            if torch.isinf(scores).any():
                message = f"reward function {reward.name!r} returned ±inf; rewards must be finite or None"
                if self.strict:
                    raise RewardFunctionError(message)
                logger.warning(message + "; scoring those samples None")
                failed += int(torch.isinf(scores).sum())
                scores = torch.where(torch.isinf(scores), torch.full_like(scores, math.nan), scores)
            per_function[reward.name] = scores
            failures[reward.name] = failed
            if reward.weight != 0:
                total = total + reward.weight * scores  # NaN propagates: a sample one function can't score is unscored
        return RewardScores(total=total, per_function=per_function, failures=failures)
