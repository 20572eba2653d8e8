"""The method seam (DESIGN.md, "Methods: the unified paradigm").

A method is three choices of DeepSeekMath §5.2.1: where its samples come from (``source``), which
reward scores them (the run's reward functions), and the gradient coefficient, which the method
turns into a loss from ``cohort.algo``. The trainer's loop never asks which method it runs; it asks
the method for a source, a training signal for each batch, the normalisers and loss of each
micro-batch, and its metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from cohort import algo
from cohort.sources.scored_batch import ScoredBatch
from cohort.config import Config
from cohort.data.tasks import Task
from cohort.distributed import World
from cohort.optimisation.update import MicroBatch, Trainable, logprobs_without_grad
from cohort.rewards import NamedReward
from cohort.rollout import Rollout
from cohort.sources import Source, SourcePieces, StepTimer


@dataclass
class TrainingSignal:
    """What the loss needs of one batch, computed once before the update."""

    loss_mask: torch.Tensor  # [N, T] bool: tokens that enter the loss
    trainable: torch.Tensor  # [N] bool: rows whose loss can be non-zero (the others skip the forward)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # per-row tensors, indexed by batch row
    metrics: dict[str, float] = field(default_factory=dict)  # step metrics known before the update


@dataclass
class MethodContext:
    """The run's shared pieces a method may use."""

    config: Config
    device: torch.device
    policy: torch.nn.Module
    reference: torch.nn.Module | None
    tokenizer: Any
    autocast: Callable[[], AbstractContextManager]
    model_path: str
    build_optimizer: Callable[[torch.nn.Module, float], tuple[torch.optim.Optimizer, Any]]
    wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda module: module
    """DDP-wraps (or FSDP2-shards) a model the method trains; returns what its training forward calls."""
    resume_from: Path | None = None
    """The checkpoint a resumed run starts from (its models are loaded from there)."""
    world: World = World()


class Method:
    """Base of every method; subclasses set the class attributes and override what they need."""

    name: ClassVar[str]
    summary: ClassVar[str]
    unit: ClassVar[str] = "row"
    """"group" when mini-batches are cut on group boundaries (GRPO groups, DPO pairs)."""
    micro_unit: ClassVar[str] = "row"
    """"group" when a group's rows must also stay in one micro-batch (a DPO pair: its loss couples
    the two rows); "row" lets micro-batches sort rows by length across groups (less padding)."""
    algorithm_keys: ClassVar[frozenset[str]] = frozenset()
    """The ``algorithm.*`` settings this method reads; setting another one is an error."""
    sections: ClassVar[frozenset[str]] = frozenset()
    """The method-specific config sections (sft, offline, dpo, ppo) this method reads."""
    takes_batch_size: ClassVar[bool] = False
    """Whether ``train.batch_size`` applies (dataset and offline sources)."""
    resets_reference: ClassVar[bool] = False
    """Whether ``algorithm.ref_reset_every`` (iterative RL's reference reset) applies."""

    @classmethod
    def check(cls, config: Config) -> None:
        """Method-specific config rules (raise ConfigError); nothing is loaded yet."""

    @classmethod
    def check_data(cls, config: Config, task: Task, rewards: list[NamedReward]) -> None:
        """Data and reward requirements, checked before any model loads (raise ValueError)."""

    @classmethod
    def needs_reference(cls, config: Config) -> bool:
        return False

    def __init__(self, context: MethodContext) -> None:
        self.context = context
        self.config = context.config

    def source(self, pieces: SourcePieces) -> Source:
        raise NotImplementedError

    def trainables(self) -> list[Trainable]:
        """Models the method trains besides the policy (PPO's value model)."""
        return []

    def signal(self, batch: ScoredBatch, timer: StepTimer) -> TrainingSignal:
        raise NotImplementedError

    def normalizers(self, signal: TrainingSignal, rows: list[int]) -> algo.LossNormalizers:
        """Counts of the whole mini-batch ``rows`` that every micro-batch's loss divides by."""
        return algo.LossNormalizers.from_mask(signal.loss_mask[rows])

    def loss(self, micro: MicroBatch, signal: TrainingSignal, norm: algo.LossNormalizers) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def metrics(self, batch: ScoredBatch, signal: TrainingSignal, stats: dict[str, float]) -> dict[str, Any]:
        """Method-specific step metrics from the update's averaged stats."""
        return {}

    def models(self) -> dict[str, torch.nn.Module]:
        """The method's own trained models by checkpoint subdirectory (saved with the policy, atomically;
        a resumed run's method loads them from ``context.resume_from``)."""
        return {}

    # --- helpers ----------------------------------------------------------------------------------

    def no_grad_logprobs(self, model: torch.nn.Module, rollout: Rollout, rows: list[int]) -> torch.Tensor:
        """[N, T] log-probs of ``rows`` under ``model`` (0 elsewhere)."""
        optim = self.config.optim
        return logprobs_without_grad(model, rollout, rows, optim.micro_batch_size, self.context.autocast, optim.micro_batch_tokens)


def rows_of(mask: torch.Tensor) -> list[int]:
    """The indices where a [N] bool mask is True."""
    return mask.nonzero().flatten().tolist()


def width_of(micro: MicroBatch) -> int:
    return micro.logprobs.shape[1]


def take(tensor: torch.Tensor, micro: MicroBatch) -> torch.Tensor:
    """The micro-batch's rows of a per-row tensor ([N] or [N, T], trimmed to the micro's width)."""
    rows = tensor[micro.rows]
    return rows if rows.dim() == 1 else rows[:, : width_of(micro)]
