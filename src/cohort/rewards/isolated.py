"""Any reward behind a hard deadline: ``{name: my_module:score, hard_deadline: true}``.

The reward is built from its spec inside a killable worker process (:mod:`cohort.rewards.workers`)
and every call runs there. A call still running at its deadline is killed with its worker, so it
ends on time even inside one long C call (a C extension, a solver, a regex engine without a
timeout), where the scorer's own deadline, a signal, would wait for the call to return. A crash
(a segfault in that C code) takes down only the worker. The price: the arguments and scores cross
a pipe, and a killed worker is replaced (a fork, then the reward is built again, outside any
deadline).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cohort.rewards.base import NamedReward, RewardTimeout
from cohort.rewards.workers import WorkerPool

Build = Callable[[dict], NamedReward]
"""Builds a reward from its spec (:func:`cohort.rewards.registry.build_reward`); a module-level function,
so that a task can name it."""

_BUILT: dict[str, Any] = {}  # in a worker: its reward, built once, by the spec's JSON


def _reward(build: Build, spec: dict[str, Any]) -> Any:
    """In a worker: the reward function built from ``spec`` (once per worker)."""
    key = json.dumps(spec, sort_keys=True, default=repr)
    if key not in _BUILT:
        _BUILT[key] = build(spec).fn
    return _BUILT[key]


def _describe(build: Build, spec: dict[str, Any]) -> dict[str, bool]:
    fn = _reward(build, spec)
    return {"is_correctness": bool(getattr(fn, "is_correctness", False)), "extracts": hasattr(fn, "extract_answer")}


def _score(build: Build, spec: dict[str, Any], prompts: list, completions: list, columns: dict) -> list:
    return list(_reward(build, spec)(prompts=prompts, completions=completions, **columns))


def _extract(build: Build, spec: dict[str, Any], completion: str) -> str | None:
    return _reward(build, spec).extract_answer(completion)


class ProcessReward:
    """A reward callable (TRL's convention) whose calls run in a killable worker process, where
    ``build(spec)`` makes it (``spec``: ``{name, ...options}``, without ``weight``/``alias``).
    ``timeout_s``: the hard deadline of a call made directly; the scorer passes its own through
    :meth:`score_within`."""

    def __init__(self, spec: Mapping[str, Any], build: Build, timeout_s: float = 60.0) -> None:
        self.spec = dict(spec)
        self.build = build
        self.timeout_s = float(timeout_s)
        self.__name__ = str(self.spec.get("name"))
        self.pool = WorkerPool(1, preload=(__name__, build.__module__), initializer=_reward, initargs=(build, self.spec))
        building_s = max(self.timeout_s, 120.0)
        (outcome,) = self.pool.run(_describe, [(build, self.spec)], building_s)
        if outcome.value is None:
            self.pool.close()
            problem = f"it ran past {building_s:g} s" if outcome.timed_out else outcome.error
            raise ValueError(f"reward {self.__name__!r} could not be built in its worker process: {problem}")
        self.is_correctness = outcome.value["is_correctness"]
        self._extracts = outcome.value["extracts"]

    def score_within(self, seconds: float, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list:
        """The scores, or RewardTimeout once the call has run ``seconds`` (its worker is then killed)."""
        columns = {key: list(values) for key, values in columns.items()}
        (outcome,) = self.pool.run(_score, [(self.build, self.spec, list(prompts), list(completions), columns)], seconds)
        if outcome.timed_out:
            raise RewardTimeout(f"exceeded its time limit of {seconds:.3g} s (its worker process was killed)")
        if outcome.error is not None:
            raise RuntimeError(outcome.error)
        return outcome.value

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list:
        return self.score_within(self.timeout_s, prompts, completions, **columns)

    def __getattr__(self, name: str) -> Any:
        if name == "extract_answer" and self.__dict__.get("_extracts"):
            return self._extract_answer
        raise AttributeError(name)

    def _extract_answer(self, completion: str) -> str | None:
        (outcome,) = self.pool.run(_extract, [(self.build, self.spec, completion)], self.timeout_s)
        return outcome.value
