"""Iterative RL (DeepSeekMath Algorithm 1, docs/spec.md §5) on top of the one training loop.

Each iteration: the reference is reset to the policy, the policy trains ``steps_per_iteration``
GRPO steps with the current reward model (an outcome RM, or a PRM for process supervision), then
fresh samples of the policy are labelled (the task's rule for outcome labels; Monte-Carlo step
labels in the manner of Math-Shepherd, or the task's gold checker, for step labels) and the reward
model CONTINUES training on them plus a replay share of the earlier iterations' data. Without a
starting reward model, iteration 0 trains one on labelled samples of the initial policy.

The run directory keeps every iteration's data and reward model::

    iterations/iter-K/data.jsonl          the fresh labelled examples of iteration K
    iterations/iter-K/reward_model/       the reward model after iteration K (HF format, training.json)

The controller's state (iteration, current reward model) is part of each checkpoint, and the
trainer checkpoints at every iteration boundary, so a run killed mid-iteration resumes exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from cohort.data.sampler import PromptSampler
from cohort.data.tasks import rows_at
from cohort.reward_training import (
    OutcomeExample,
    ProcessExample,
    read_outcome_examples,
    read_process_examples,
    train_outcome_model,
    train_process_model,
    with_replay,
    write_examples,
)
from cohort.reward_training.labels import monte_carlo_step_labels
from cohort.rewards import NamedReward
from cohort.rewards.process_model import ProcessRewardModel, split_steps
from cohort.rewards.reward_model import RewardModelReward
from cohort.sources import SourcePieces, StepTimer, sample_and_score

ITERATIONS_DIR = "iterations"
REWARD_MODEL_NAME = "reward_model"


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


class IterativeRL:
    """Runs Algorithm 1's outer loop around the training loop: reward-model (re)training at iteration
    boundaries. It reaches the run through a narrow seam: the source pieces (it samples with their
    policy sampler and swaps their scoring stage as one object), ``reset_reference`` (pi_ref <- pi_theta),
    and ``gathered`` (FSDP2: full parameters for its forwards)."""

    def __init__(self, pieces: SourcePieces, *, reset_reference: Callable[[], None],
                 gathered: Callable[[], AbstractContextManager], base_model: str, device: torch.device) -> None:
        self.pieces = pieces
        self.config = pieces.config
        self.options = pieces.config.iterative
        self.reset_reference = reset_reference
        self.gathered = gathered
        self.base_model = base_model
        self.device = device
        self.root = pieces.run_dir.root / ITERATIONS_DIR
        self.iteration = 1  # the iteration the next policy step belongs to
        self.reward_model: str | None = None  # the reward model the policy trains with now
        self.records: list[dict[str, Any]] = []  # per finished reward-model training: iteration, accuracy, AUCs

    # --- the reward model in use ----------------------------------------------------------------------

    def install(self, path: str) -> None:
        """Make the policy train with the reward model at ``path`` from the next step on."""
        self.reward_model = path
        scoring = self.pieces.scoring
        if self.options.supervision == "process":
            prm = ProcessRewardModel(path, self.pieces.sampler.tokenizer, **self._prm_options())
            self.pieces.scoring = scoring.replaced(process_model=prm)
            return
        model = NamedReward(REWARD_MODEL_NAME, RewardModelReward(path, device=str(self.device)), 1.0)
        self.pieces.scoring = scoring.replaced(rewards=[r for r in scoring.rewards if r.name != REWARD_MODEL_NAME] + [model])

    def _prm_options(self) -> dict[str, Any]:
        options = dict(self.config.reward.process_model or {})
        options.pop("path", None)
        options.setdefault("device", str(self.device))
        return options

    # --- the loop's hooks -----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Before the first step: the starting reward model (given, or trained now as iteration 0)."""
        if self.reward_model is not None:  # resumed: the checkpoint named it
            self.install(self.reward_model)
        elif self.options.reward_model is not None:
            self.install(self.options.reward_model)
        else:
            self.install(self._retrain(0, step=0))

    def after_step(self, step: int) -> dict[str, Any]:
        """After policy step ``step``: at an iteration's end, retrain the reward model and reset the
        reference; returns the metrics of that (empty otherwise)."""
        metrics: dict[str, Any] = {"iteration": self.iteration}
        per, last = self.options.steps_per_iteration, self.options.iterations
        if step % per or self.iteration >= last:  # the last iteration trains no further reward model
            return metrics
        path = self._retrain(self.iteration, step)
        record = self.records[-1]
        metrics.update({f"rm/{key}": record[key] for key in ("held_out_accuracy", "held_out_auc", "held_out_within_group_auc",
                                                             "examples")})
        self.iteration += 1
        self.install(path)
        self.reset_reference()
        return metrics

    def boundary(self, step: int) -> bool:
        """Whether ``step`` ended an iteration (the loop checkpoints there)."""
        return step % self.options.steps_per_iteration == 0

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "reward_model": self.reward_model, "records": json.dumps(self.records)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration, self.reward_model = int(state["iteration"]), state["reward_model"]
        self.records = json.loads(state["records"])
        if self.reward_model is not None:
            self.install(self.reward_model)

    # --- reward-model training ------------------------------------------------------------------------

    def _retrain(self, iteration: int, step: int) -> str:
        """Label fresh policy samples, mix in the replay share, (continue to) train; returns the new RM's path."""
        options, seed = self.options, self.config.train.seed
        directory = self.root / f"iter-{iteration}"
        out = directory / "reward_model"
        world = self.pieces.world
        if world.is_main:
            with self.gathered():
                fresh = self._label(self._samples(iteration))
            write_examples(directory / "data.jsonl", fresh)
            earlier = [example for k in range(iteration) for example in self._read(k)]
            mixture = with_replay(fresh, earlier, options.replay_fraction, seed=seed + iteration)
            train = train_process_model if options.supervision == "process" else train_outcome_model
            init = self.reward_model or options.base_model or self.base_model
            report = train(mixture, init, out, held_out_fraction=options.rm_held_out, epochs=options.rm_epochs,
                           lr=options.rm_lr, batch_size=options.rm_batch_size, seed=seed + iteration, device=str(self.device),
                           patience=options.rm_patience)
            self.pieces.info(f"iteration {iteration}: " + report.summary().replace("\n", "; "))
            held = report.held_out
            self.records.append({
                "iteration": iteration, "step": step, "examples": len(mixture), "fresh": len(fresh),
                "replayed": len(mixture) - len(fresh), "seconds": report.seconds,
                "held_out_accuracy": held.accuracy if held else float("nan"),
                "held_out_auc": held.auc if held and held.auc is not None else float("nan"),
                "held_out_within_group_auc": _or_nan(held.within_group_auc if held else None),
                "held_out_per_step_within_group_auc": [_or_nan(v) for v in held.per_step_within_group_auc] if held else [],
            })
        self.records = world.broadcast(self.records)
        world.barrier()
        return str(out)

    def _read(self, iteration: int) -> list[Any]:
        path = self.root / f"iter-{iteration}" / "data.jsonl"
        if not path.exists():
            return []
        return read_process_examples(path) if self.options.supervision == "process" else read_outcome_examples(path)

    def _samples(self, iteration: int):
        """rm_samples completions of the current policy (rm_samples / G prompts, seeded by the iteration)."""
        group, seed, task = self.config.rollout.group_size, self.config.train.seed, self.pieces.task
        prompts = max(1, self.options.rm_samples // group)
        sampler = PromptSampler(len(task.train), seed=seed * 7_919 + iteration)
        rows = rows_at(task.train, sampler.next_indices(prompts))
        generator = torch.Generator(device=self.device).manual_seed(seed * 104_729 + iteration)
        return sample_and_score(self.pieces, rows, group, StepTimer(), generator)

    def _label(self, batch) -> list[OutcomeExample] | list[ProcessExample]:
        """Training examples from a scored batch: outcome labels, or step labels (Monte-Carlo or gold)."""
        prompts = [p for p in batch.prompts for _ in range(batch.group_size)]
        if self.options.supervision == "outcome":
            return [OutcomeExample(p, c, float(ok)) for p, c, ok in zip(prompts, batch.completions, batch.correct.tolist())]
        if self.options.labels == "gold":
            return self._gold_labels(prompts, batch)
        sampler = self.pieces.sampler
        answers = [a for a in batch.columns[self.pieces.task.answer_column] for _ in range(batch.group_size)]
        columns = {key: [v for v in values for _ in range(batch.group_size)] for key, values in batch.columns.items()}
        generator = torch.Generator(device=self.device).manual_seed(self.config.train.seed * 15_485_863 + self.iteration)
        labelling = monte_carlo_step_labels(
            sampler.policy, sampler.tokenizer, prompts, batch.completions, answers, self.pieces.scoring.correctness.fn,
            rollouts=self.options.mc_rollouts, params=sampler.params, generator=generator,
            step_marker=self._marker(), chat=sampler.renderer.chat, columns=columns, engine=sampler.engine,
        )
        return labelling.process_examples(prompts, soft=self.options.mc_label == "soft")

    def _gold_labels(self, prompts: list[Any], batch) -> list[ProcessExample]:
        """Step labels from the task's exact checker (the multi-step task's check_steps)."""
        from cohort.data.multistep import check_steps

        examples = []
        for prompt, text in zip(prompts, batch.completions):
            steps = tuple(text[a:b] for a, b in split_steps(text, self._marker()))
            if steps:
                examples.append(ProcessExample(prompt, steps, tuple(float(ok) for ok in check_steps(prompt, text, self._marker()))))
        return examples

    def _marker(self) -> str:
        return (self.config.reward.process_model or {}).get("step_marker", "\n")
