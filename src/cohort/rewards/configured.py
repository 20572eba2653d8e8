"""The rewards a run scores with, as its config names them: built locally or on Ray actors, plus DAPO's
soft overlong penalty. Training, held-out evaluation and ``cohort eval`` all build them here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cohort.rewards.base import NamedReward
from cohort.rewards.registry import build_reward, reward_label, spec_correctness


def build_rewards(
    settings: Any, default_specs: Sequence[Mapping[str, Any]], *, overlong: tuple[float, int] | None = None
) -> list[NamedReward]:
    """The reward functions of a run's ``reward`` section (a :class:`cohort.config.RewardConfig`; the
    task's ``default_specs`` when it names none), plus DAPO's soft overlong penalty when ``overlong``
    = (fraction of the budget, max_new_tokens) has a fraction > 0. With ``reward.backend: ray`` each
    function runs on Ray actors, built there from its spec.
    """
    specs = list(settings.functions or default_specs)
    backend = settings
    if backend.backend == "ray":
        from cohort.rewards.ray_backend import RayReward, connect

        connect(backend.ray_address)
        rewards = [NamedReward(reward_label(spec), RayReward(spec, workers=backend.ray_workers, chunk_size=backend.ray_chunk_size,
                                                             timeout_s=backend.timeout_s), float(spec.get("weight", 1.0)),
                               spec_correctness(str(spec.get("name")), spec.get("correctness")))
                   for spec in specs]
    else:
        rewards = [build_reward(spec, timeout_s=settings.timeout_s) for spec in specs]
    if overlong is not None and overlong[0] > 0:
        from cohort.rewards.builtin import SoftOverlongPunishment

        fraction, budget = overlong
        rewards.append(NamedReward("soft_overlong", SoftOverlongPunishment(budget, max(1, round(fraction * budget))), 1.0))
    return rewards


def run_rewards(config: Any, task: Any) -> list[NamedReward]:
    """The rewards a run (a :class:`cohort.config.Config`) scores with on ``task``: training, held-out
    evaluation and ``cohort eval`` build them here, so all three score alike."""
    return build_rewards(config.reward, task.default_rewards,
                         overlong=(config.algorithm.overlong_buffer, config.rollout.max_new_tokens))
