"""Reward scoring on a Ray cluster (``reward.backend: ray``): the work that spreads, on an existing engine.

Each configured reward function is built once on each of ``workers`` Ray actors from its spec
(``{name, weight, ...options}``, as in ``reward.functions``), so heavy state (a reward model, a code
sandbox) lives on the workers and is never shipped per call. A batch is cut into chunks that go to
the actors round-robin. A chunk whose worker fails, dies or runs past the time limit scores None
for its samples (the run goes on, as with any failing reward); a dead actor is restarted by Ray for
the next call. ``ray.init`` joins ``address`` (``auto``: a cluster started with ``ray start``) or
starts a local one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

INSTALL_HINT = "reward.backend=ray needs Ray: pip install 'cohort[ray]' (or pip install ray)"


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` ("auto": a running one) or start a local one, once per process."""
    ray = _ray()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster for this run only; no token prompt
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        options["address"] = address
    elif num_cpus:
        options["num_cpus"] = num_cpus
    ray.init(**options)


class _RewardWorker:
    """Runs on a Ray worker: one reward function built from its spec, scoring chunks."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        from cohort.rewards.registry import build_reward

        self.reward = build_reward(spec)

    def describe(self) -> dict[str, Any]:
        fn = self.reward.fn
        return {"is_correctness": bool(getattr(fn, "is_correctness", False)), "extracts": hasattr(fn, "extract_answer")}

    def score(self, prompts: list, completions: list, columns: dict) -> list:
        return list(self.reward.fn(prompts=prompts, completions=completions, **columns))

    def extract(self, completions: list) -> list:
        return [self.reward.fn.extract_answer(text) for text in completions]


class RayReward:
    """A TRL-style reward callable whose calls run on Ray actors (see the module docstring)."""

    def __init__(self, spec: Mapping[str, Any], *, workers: int = 2, chunk_size: int = 16, timeout_s: float = 60.0) -> None:
        ray = _ray()
        if workers < 1 or chunk_size < 1:
            raise ValueError(f"reward.ray_workers and reward.ray_chunk_size must be >= 1, got {workers} and {chunk_size}")
        self.spec = dict(spec)
        self.chunk_size = chunk_size
        self.timeout_s = timeout_s
        self._actor_class = ray.remote(max_restarts=0, max_task_retries=0)(_RewardWorker)
        self.actors = [self._actor_class.remote(self.spec) for _ in range(workers)]
        try:
            facts = ray.get(self.actors[0].describe.remote(), timeout=max(timeout_s, 120.0))
        except ray.exceptions.RayError as err:
            raise ValueError(f"reward {self.spec.get('name')!r} could not be built on a Ray worker: {err}") from None
        self.is_correctness = facts["is_correctness"]
        self._extracts = facts["extracts"]
        self.__name__ = str(self.spec.get("alias") or self.spec.get("name"))

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        ray = _ray()
        n = len(completions)
        chunks = [(start, min(start + self.chunk_size, n)) for start in range(0, n, self.chunk_size)]
        futures = []
        for index, (start, stop) in enumerate(chunks):
            part = {key: list(values[start:stop]) for key, values in columns.items()}
            actor = self.actors[index % len(self.actors)]
            futures.append(actor.score.remote(list(prompts[start:stop]), list(completions[start:stop]), part))
        # One deadline for the whole batch (the chunks run in parallel), inside the scorer's own time limit.
        ready, late = ray.wait(futures, num_returns=len(futures), timeout=0.9 * self.timeout_s)
        for future in late:
            ray.cancel(future, force=True)
        scores: list[float | None] = []
        for index, ((start, stop), future) in enumerate(zip(chunks, futures)):
            chunk = self._chunk_scores(future, stop - start, start, future in late)
            if chunk is None:  # the worker is gone: its samples score None, a fresh worker takes its place
                self._replace(index % len(self.actors))
                chunk = [None] * (stop - start)
            scores.extend(chunk)
        return scores

    def _replace(self, index: int) -> None:
        ray = _ray()
        ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self._actor_class.remote(self.spec)

    def _chunk_scores(self, future, count: int, start: int, late: bool) -> list[float | None] | None:
        """A chunk's scores; None for each sample if the reward failed on the worker; None (no list)
        when the worker itself died or hung, so that it is replaced."""
        ray = _ray()
        try:
            if late:
                raise TimeoutError(f"no answer within {0.9 * self.timeout_s:g} s")
            chunk = ray.get(future)
            if len(chunk) != count:
                raise ValueError(f"returned {len(chunk)} scores for {count} completions")
            return chunk
        except (ray.exceptions.RayError, ValueError, TimeoutError) as err:
            logger.warning("reward %r: a Ray worker failed on samples %d-%d (%s: %s); they score None",
                           self.__name__, start, start + count - 1, type(err).__name__, str(err).splitlines()[0][:200])
            lost = isinstance(err, (TimeoutError, ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError))
            return None if lost else [None] * count

    def __getattr__(self, name: str) -> Any:
        if name == "extract_answer" and self.__dict__.get("_extracts"):
            return self._extract_answer
        raise AttributeError(name)

    def _extract_answer(self, completion: str) -> str | None:
        ray = _ray()
        return ray.get(self.actors[0].extract.remote([completion]), timeout=self.timeout_s)[0]
