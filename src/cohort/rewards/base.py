"""The reward protocol and the scorer that runs several weighted reward functions safely.

A reward function is any callable ``fn(prompts, completions, **dataset_columns) -> list[float | None]``
(TRL's convention); it is called with keyword arguments and also receives ``completion_ids``.
``None`` (or NaN) means "could not score" (docs/spec.md §10.7). A function that raises, returns something
malformed, or runs past its time limit scores ``None`` for the affected samples — the run goes on —
unless ``strict`` is set, in which case :class:`RewardFunctionError` is raised.

Deadlines. The scorer's own is soft: a SIGALRM in the main thread (an abandoned thread elsewhere)
interrupts Python code, but no signal handler runs while the interpreter is inside one long C call.
A reward with a hard deadline of its own (it runs its work in a process it can kill) offers
``score_within(seconds, prompts=..., completions=..., **columns)``, raising :class:`RewardTimeout`
past it; the scorer calls that instead (docs/rewards.md, "Deadlines").
"""

from __future__ import annotations

import logging
import math
import numbers
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    correctness: bool | None = None
    """Whether a score of 1 means a right answer (reported as ``accuracy``, used by held-out
    evaluation, RFT's filter and pass@k). None: the function says so itself (``fn.is_correctness``)."""

    @property
    def decides_correctness(self) -> bool:
        return bool(getattr(self.fn, "is_correctness", False)) if self.correctness is None else self.correctness


@dataclass
class RewardScores:
    """Scores of one batch. NaN marks samples a function could not score."""

    total: torch.Tensor  # [N] float64: sum of weight x score; NaN if a weighted function gave None
    per_function: dict[str, torch.Tensor]  # name -> [N] float64
    failures: dict[str, int] = field(default_factory=dict)  # name -> samples lost to errors/timeouts
    first_errors: dict[str, str] = field(default_factory=dict)  # name -> its first error in the batch, if any


@contextmanager
def _alarm(seconds: float):
    """Interrupt the enclosed Python code after ``seconds`` with RewardTimeout (main thread, Unix)."""

    def on_alarm(signum, frame):
        raise RewardTimeout(f"exceeded its time limit of {seconds:.3g} s")

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
        raise RewardTimeout(f"exceeded its time limit of {seconds:.3g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


class MalformedScores(ValueError):
    """A reward function returned something other than one float or None per completion: an error of
    the function for the whole call (the scorer never retries it sample by sample)."""


def _checked_scores(output: Any, expected: int) -> list[float]:
    """The function's output as floats (NaN for None); MalformedScores if it is malformed."""
    tolist = getattr(output, "tolist", None)  # a torch tensor or a numpy array
    if callable(tolist):
        output = tolist()
    if isinstance(output, (str, bytes)) or not isinstance(output, Sequence):
        raise MalformedScores(f"returned {type(output).__name__}, expected a list of {expected} floats or None")
    if len(output) != expected:
        raise MalformedScores(f"returned {len(output)} scores for {expected} completions")
    scores = []
    for i, value in enumerate(output):
        if value is None:
            scores.append(math.nan)
        elif isinstance(value, numbers.Real):
            scores.append(float(value))
        else:
            raise MalformedScores(f"score {i} is {value!r}; expected a float or None")
    return scores


def _slice_columns(columns: dict[str, Sequence[Any]], index: int) -> dict[str, list[Any]]:
    return {key: [values[index]] for key, values in columns.items()}


def _describe(err: BaseException) -> str:
    return str(err) if isinstance(err, (RewardTimeout, MalformedScores)) else f"{type(err).__name__}: {err}"


@dataclass
class _Failures:
    """What went wrong for one function in one scoring call, logged as one line (docs/rewards.md)."""

    name: str
    samples: int
    batch_error: str | None = None  # the whole-batch call raised or ran out of time
    malformed: str | None = None  # the whole-batch call returned malformed scores (never retried)
    timeouts: int = 0
    errors: int = 0
    budget_spent: int = 0  # samples never retried: the retry budget was spent
    infinite: int = 0
    first: str | None = None  # the first per-sample failure, "sample i: ..."

    @property
    def first_error(self) -> str | None:
        """What went wrong first: a malformed whole-batch answer, a sample's error, or the batch call's."""
        if self.malformed:
            return self.malformed
        if self.infinite and not self.first:
            return "returned ±inf"
        return self.first or self.batch_error

    @property
    def count(self) -> int:
        return (self.samples if self.malformed else self.timeouts + self.errors + self.budget_spent) + self.infinite

    def sample_failed(self, index: int, err: BaseException) -> None:
        if isinstance(err, RewardTimeout):
            self.timeouts += 1
        else:
            self.errors += 1
        self.first = self.first or f"sample {index}: {_describe(err)}"

    def message(self) -> str | None:
        """One summary line, or None when the call went through."""
        if self.malformed:
            return (f"reward {self.name!r} {self.malformed}: all {self.samples} samples score None "
                    "(an error of the function; not retried sample by sample)")
        if self.batch_error is None and not self.infinite:
            return None
        parts = [f"reward {self.name!r}: {self.count} of {self.samples} samples score None"]
        if self.batch_error is not None:
            parts.append(f"the batch call failed ({self.batch_error}), then one by one: {self.timeouts} timed out, "
                         f"{self.errors} raised, {self.budget_spent} not tried (retry budget spent)")
        if self.infinite:
            parts.append(f"{self.infinite} returned ±inf")
        return "; ".join(parts) + (f"; first: {self.first}" if self.first else "")


class RewardScorer:
    """Runs weighted reward functions over a batch, isolating failures to the samples they hit.

    Rules (docs/rewards.md, "Failures"): a batch call that raises or runs past ``timeout_s`` is
    retried sample by sample within a retry budget of another ``timeout_s``, each sample's call
    limited to an equal share of what is left, so one hanging sample costs its share and never its
    neighbours'; what an overrunning call leaves unspent budget for is scored None, counted and named.
    Malformed output (wrong count, type or value) is the function's error for the whole call: every
    sample None, no retry. A call logs at most one summary warning (every failing function's summary,
    joined by " | "); ``strict`` raises.
    """

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

    @staticmethod
    def _call(reward: NamedReward, prompts, completions, columns, seconds: float) -> list[float]:
        """One call of ``reward`` within ``seconds``: its own hard deadline (``score_within``) where it
        has one, else the soft one of :func:`call_with_time_limit`."""
        kwargs = dict(prompts=list(prompts), completions=list(completions), **columns)
        within = getattr(reward.fn, "score_within", None)
        if callable(within):
            output = within(seconds, **kwargs)
        else:
            output = call_with_time_limit(lambda: reward.fn(**kwargs), seconds)
        return _checked_scores(output, len(completions))

    def _score_one_function(self, reward: NamedReward, prompts, completions, columns) -> tuple[list[float], _Failures]:
        """Scores of one function; on failure retry sample by sample so one bad sample costs only itself."""
        n = len(completions)
        failures = _Failures(reward.name, n)
        try:
            return self._call(reward, prompts, completions, columns, self.timeout_s), failures
        except MalformedScores as err:
            if self.strict:
                raise RewardFunctionError(f"reward function {reward.name!r} failed: {err}") from err
            failures.malformed = str(err)
            return [math.nan] * n, failures
        except (Exception, RewardTimeout) as err:  # any failure of user code is contained here
            if self.strict:
                raise RewardFunctionError(f"reward function {reward.name!r} failed: {err}") from err
            failures.batch_error = _describe(err)
            if n == 1:
                failures.sample_failed(0, err)
                return [math.nan], failures
        return self._retry_one_by_one(reward, prompts, completions, columns, failures), failures

    def _retry_one_by_one(self, reward: NamedReward, prompts, completions, columns, failures: _Failures) -> list[float]:
        """Each sample alone, within a budget of ``timeout_s`` for the whole pass: a sample's call may
        take an equal share of what is left, so samples that finish early leave more to the rest."""
        n = len(completions)
        deadline = time.monotonic() + self.timeout_s
        scores: list[float] = []
        for i in range(n):
            left = deadline - time.monotonic()
            if left <= 0:  # a call overran its share (a C call no signal interrupts): stop paying
                failures.budget_spent = n - i
                failures.first = failures.first or f"retry budget of {self.timeout_s:g} s spent before sample {i}"
                return scores + [math.nan] * (n - i)
            try:
                scores.extend(self._call(reward, prompts[i : i + 1], completions[i : i + 1], _slice_columns(columns, i),
                                         left / (n - i)))
            except (Exception, RewardTimeout) as err:
                failures.sample_failed(i, err)
                scores.append(math.nan)
        return scores

    def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[str],
        columns: dict[str, Sequence[Any]] | None = None,
    ) -> RewardScores:
        """Score a batch. ``columns`` are per-sample dataset columns (and ``completion_ids``)."""
        import torch  # here, not at the top: the math reward's worker processes import this package without torch

        columns = dict(columns or {})
        n = len(completions)
        if len(prompts) != n or any(len(values) != n for values in columns.values()):
            raise ValueError(f"prompts and every column must hold {n} entries, one per completion")
        per_function, failures, first_errors, messages = {}, {}, {}, []
        total = torch.zeros(n, dtype=torch.float64)
        for reward in self.rewards:
            values, failed = self._score_one_function(reward, prompts, completions, columns)
            scores = torch.tensor(values, dtype=torch.float64)  # [N]
            infinite = torch.isinf(scores)  # [N]
            if infinite.any():
                if self.strict:
                    raise RewardFunctionError(f"reward function {reward.name!r} returned ±inf; rewards must be finite or None")
                failed.infinite = int(infinite.sum())
                scores = torch.where(infinite, torch.full_like(scores, math.nan), scores)
            message = failed.message()
            if message:
                messages.append(message)
            per_function[reward.name] = scores
            failures[reward.name] = failed.count
            if failed.first_error:
                first_errors[reward.name] = failed.first_error
            if reward.weight != 0:
                total = total + reward.weight * scores  # NaN propagates: a sample one function can't score is unscored
        if messages:  # one line per scoring call, whichever functions failed
            logger.warning(" | ".join(messages))
        return RewardScores(total=total, per_function=per_function, failures=failures, first_errors=first_errors)
