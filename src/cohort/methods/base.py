"""The method seam (docs/design.md, "Methods: the unified paradigm").

A method is three choices of DeepSeekMath §5.2.1: where its samples come from (``source``), which
reward scores them (the run's reward functions), and the gradient coefficient, which the method
turns into a loss from ``cohort.algo``. Everything method-specific is declared on its class, in its
own file: its config section and the shared keys it reads, its checks, its source, its training
signal, its loss, its metric names and its report panels. The loop, the config, the report and the
registry never ask which method runs; they ask the method.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from cohort import algo
from cohort.config import Config
from cohort.data.tasks import Task
from cohort.distributed import World
from cohort.monitoring.panels import Panel
from cohort.optimisation.batching import logprobs_without_grad
from cohort.optimisation.update import MicroBatch, Trainable
from cohort.rewards import NamedReward
from cohort.rollout import Rollout
from cohort.sources import ScoredBatch, Source, SourcePieces, StepTimer


@dataclass
class TrainingSignal:
    """What the loss needs of one batch, computed once before the update."""

    loss_mask: torch.Tensor  # [N, T] bool: tokens that enter the loss
    trainable: torch.Tensor  # [N] bool: rows whose loss can be non-zero (the others skip the forward)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # per-row tensors, indexed by batch row
    metrics: dict[str, float] = field(default_factory=dict)  # step metrics known before the update
    per_sample: torch.Tensor | None = None  # [N] float: each sample's advantage or coefficient, for the logs


@dataclass(kw_only=True)
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
    world: World = field(default_factory=World)


class Method:
    """Base of every method; subclasses set the class attributes and override what they need."""

    name: ClassVar[str]
    summary: ClassVar[str]
    samples: ClassVar[str]
    """Where its samples come from: "dataset", "offline" (the initial policy's, drawn once) or "online"."""
    scored: ClassVar[bool] = True
    """Whether the run's reward functions score its samples."""
    config_section: ClassVar[tuple[str, type] | None] = None
    """Its own settings: (section name, dataclass), registered with the config when the class is."""
    reads: ClassVar[frozenset[str]] = frozenset()
    """The keys of shared sections it reads that not every method reads: dotted keys, or
    ``"section.*"`` for a whole section. Setting such a key for a method that does not read it is an error."""
    panels: ClassVar[tuple[Panel, ...]] = ()
    """The report's plots of its own metrics (see cohort.monitoring.panels)."""
    unit: ClassVar[str] = "row"
    """"group" when mini-batches are cut on group boundaries (GRPO groups, DPO pairs)."""
    micro_unit: ClassVar[str] = "row"
    """"group" when a group's rows must also stay in one micro-batch (a DPO pair: its loss couples
    the two rows); "row" lets micro-batches sort rows by length across groups (less padding)."""

    @classmethod
    def check(cls, config: Config) -> None:
        """Method-specific config rules (raise ConfigError); nothing is loaded yet."""

    @classmethod
    def check_data(cls, config: Config, task: Task, rewards: list[NamedReward]) -> None:
        """Data and reward requirements, checked before any model loads (raise ValueError)."""

    @classmethod
    def needs_reference(cls, config: Config) -> bool:
        return False

    @classmethod
    def reads_key(cls, key: str) -> bool:
        """Whether ``key`` is one of the method's settings."""
        section = key.split(".", 1)[0]
        own = cls.config_section is not None and cls.config_section[0] == section
        return own or key in cls.reads or f"{section}.*" in cls.reads

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
        """Method-specific step metrics from the batch and the update's averaged stats."""
        return {}

    def models(self) -> dict[str, torch.nn.Module]:
        """The method's own trained models by checkpoint subdirectory (saved with the policy, atomically;
        a resumed run's method loads them from ``context.resume_from``)."""
        return {}

    # --- helpers ----------------------------------------------------------------------------------

    def old_logprobs(self, rollout: Rollout, rows: list[int]) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
        """pi_old's log-probs [N, T] of ``rows`` (0 elsewhere), the engine-mismatch metrics, and the
        truncated importance-sampling weights [N, T] (None when off).

        At mu = 1 the native engine's sampling log-probs are the policy's own: pi_old. Otherwise one
        no-grad forward recomputes them: mu > 1, or samples of another engine (vLLM), whose kernels
        round differently; then ``rollout/logprob_diff_mean`` and ``_max`` measure the gap on the
        tokens of ``rows``, and ``algorithm.tis_cap`` turns on the TIS weights."""
        if self.config.algorithm.mu == 1 and rollout.sampled_by_policy:
            return rollout.sampling_logprobs, {}, None
        old = self.no_grad_logprobs(self.context.policy, rollout, rows)  # [N, T]
        if rollout.sampled_by_policy or not rows:
            return old, {}, None
        mask = torch.zeros_like(rollout.completion_mask)  # [N, T]
        mask[rows] = rollout.completion_mask[rows]
        engine = rollout.sampling_logprobs.to(old.device)  # [N, T]
        weights, stats = algo.engine_mismatch(old, engine, mask, self.config.algorithm.tis_cap)
        return old, {f"rollout/{name}": float(value) for name, value in stats.items()}, weights

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


def take_if_present(tensors: dict[str, torch.Tensor], name: str, micro: MicroBatch) -> torch.Tensor | None:
    """``take(tensors[name], micro)``, or None when the signal has no such tensor (a knob turned off)."""
    return take(tensors[name], micro) if name in tensors else None
