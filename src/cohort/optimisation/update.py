"""The one optimisation loop every method shares: mu passes over a step's batch, in mini-batches of
optimizer steps, each accumulated over micro-batches of forward/backward passes.

The loop knows nothing about any method. It asks the method for the batch-wide normalisers of a
mini-batch (so micro-batching never changes the gradient, docs/spec.md §10.9) and for the loss of each
micro-batch given the policy's log-probs; it clips and steps every :class:`Trainable` (the policy,
and e.g. PPO's value model). Micro-batches are cut from whole units: single rows, or whole groups
(a GRPO group, a DPO pair) that are never split.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from cohort import algo
from cohort.distributed import World, gradient_sync, is_sharded
from cohort.models.scoring import (
    completion_logprobs_and_entropy,
)
from cohort.optimisation.batching import (
    batch_inputs,
    mini_batches,
    rollout_micro_batches,
)
from cohort.rollout import Rollout


@dataclass
class Trainable:
    """A model the loop updates, with its optimizer, learning-rate schedule and gradient clip."""

    name: str
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    max_grad_norm: float = 0.0  # 0 = no clipping
    forward: torch.nn.Module | None = None  # what the training forward calls (a DDP wrapper); None: module

    @property
    def caller(self) -> torch.nn.Module:
        return self.module if self.forward is None else self.forward


@dataclass(frozen=True)
class MicroBatch:
    """One forward/backward's rows and the policy's outputs on them (widths trimmed to the rows)."""

    rows: torch.Tensor  # [n] long, indices into the step's batch
    logprobs: torch.Tensor  # [n, T'] float32, with gradient
    entropy: torch.Tensor  # [n, T'] float32, detached
    mask: torch.Tensor  # [n, T'] bool, the loss mask of these rows
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # prompt ids/mask [n, Lp'], completion ids/mask [n, T']


class Objective(Protocol):
    """What the loop needs from a method."""

    unit: str  # "row" or "group": what a mini-batch is cut from
    micro_unit: str  # "row" or "group": what a micro-batch is cut from (a DPO pair must stay whole)

    def normalizers(self, signal: Any, rows: list[int]) -> algo.LossNormalizers: ...

    def loss(self, micro: MicroBatch, signal: Any, norm: algo.LossNormalizers) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


@dataclass(kw_only=True)
class LoopSettings:
    """How the loop cuts and repeats a batch."""

    passes: int  # mu
    mini_batches: int
    micro_batch_size: int
    autocast: Callable[[], AbstractContextManager]
    micro_batch_tokens: int = 0  # padded tokens per micro-batch at most (0: rows only)
    world: World = World()


class _Totals:
    """Sums of the per-update statistics, averaged at the end."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.updates = 0
        self.entropy_sum = 0.0
        self.trained_tokens = 0
        self.grad_norms: dict[str, list[float]] = {}

    def add_micro(self, loss: torch.Tensor, stats: dict[str, torch.Tensor], micro: MicroBatch, sums: dict[str, float]) -> None:
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        for name, value in stats.items():
            sums[name] = sums.get(name, 0.0) + float(value)
        self.entropy_sum += float(algo.masked_sum(micro.entropy, micro.mask))
        self.trained_tokens += int(micro.mask.sum())

    def reduce(self, world: World) -> None:
        """Add up every rank's sums (their parts were normalised by batch-wide counts)."""
        if not world.distributed:
            return
        names = sorted(self.sums)
        totals = world.sum(torch.tensor([self.sums[n] for n in names] + [self.entropy_sum, float(self.trained_tokens)], dtype=torch.float64))
        self.sums = dict(zip(names, totals[: len(names)].tolist()))
        self.entropy_sum, self.trained_tokens = float(totals[-2]), int(totals[-1])

    def result(self) -> dict[str, float]:
        """Every stat averaged over the updates; ``trained_tokens`` (per update) lets a method turn a
        stat that sums over trained tokens into a mean; ``entropy`` is the mean over trained tokens."""
        updates = max(1, self.updates)
        result = {name: value / updates for name, value in self.sums.items()}
        result["trained_tokens"] = self.trained_tokens / updates
        result["entropy"] = self.entropy_sum / self.trained_tokens if self.trained_tokens else float("nan")
        for name, norms in self.grad_norms.items():
            key = "grad_norm" if name == "policy" else f"{name}/grad_norm"
            result[key] = statistics.fmean(norms) if norms else 0.0
        return result


def _step(trainables: list[Trainable], totals: _Totals) -> None:
    """Clip each trainable's gradient by its own norm and make its optimizer step."""
    for trainable in trainables:
        limit = trainable.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(trainable.module.parameters(), limit)
        totals.grad_norms.setdefault(trainable.name, []).append(float(norm))
        trainable.optimizer.step()


def _all_ranks(world: World, norm: algo.LossNormalizers) -> algo.LossNormalizers:
    """The normalisers of the global mini-batch: every rank's counts added up."""
    if not world.distributed:
        return norm
    return algo.LossNormalizers(world.sum(norm.num_sequences), world.sum(norm.num_tokens), world.sum(norm.num_first_tokens))


def _micro_step(objective: Objective, signal: Any, rollout: Rollout, loss_mask: torch.Tensor, micro_rows: list[int],
                policy: torch.nn.Module, norm: algo.LossNormalizers, settings: LoopSettings, weight: float):
    """Forward and backward of one micro-batch; ``weight`` scales its gradient (0: a rank's placeholder)."""
    device = rollout.completion_ids.device
    inputs = batch_inputs(rollout, micro_rows, device)
    index = torch.tensor(micro_rows, device=device)
    with settings.autocast():  # the backward runs each op in the dtype its forward used
        logprobs, entropy = completion_logprobs_and_entropy(policy, *inputs, temperature=rollout.logprob_temperature)  # [n, T'] each
    micro = MicroBatch(index, logprobs, entropy, loss_mask[index, : logprobs.shape[1]], inputs)
    loss, stats = objective.loss(micro, signal, norm)
    (loss * weight).backward()  # DDP / FSDP2 average gradients over ranks: the world size undoes that
    return loss, stats, micro


def _plan(rollout: Rollout, rows: list[int], mini: list[int], unit: str, settings: LoopSettings, sharded: bool,
          anything: bool) -> list[tuple[list[int], bool]]:
    """This rank's micro-batches of one optimizer step, each with whether it is real (False: a
    zero-weighted placeholder that only takes part in the collectives).

    DDP: a rank with no rows runs one placeholder (its backward joins the one gradient sync).
    FSDP2: every forward and backward is a collective, so every rank runs as many micro-batches as
    the rank with the most; the others pad with placeholders."""
    micros = rollout_micro_batches(rollout, rows, settings.micro_batch_size, settings.micro_batch_tokens, unit)
    if sharded:
        count = settings.world.max(len(micros))
    elif settings.world.distributed and anything:
        count = max(1, len(micros))
    else:
        count = len(micros)
    filler = mini[:1] if unit == "row" else mini[: rollout.group_size]
    return [(m, True) for m in micros] + [(filler, False)] * (count - len(micros))


def _mini_step(objective: Objective, signal: Any, rollout: Rollout, loss_mask: torch.Tensor, mini: list[int],
               trainable_rows: torch.Tensor, trainables: list[Trainable], settings: LoopSettings, totals: _Totals) -> None:
    """One optimizer step: the mini-batch's micro-batches, accumulated, then clip and step every trainable."""
    world = settings.world
    norm = _all_ranks(world, objective.normalizers(signal, mini))
    rows = [r for r in mini if trainable_rows[r]]
    anything = world.sum(len(rows)) > 0  # every rank must agree whether this mini-batch makes a step
    for trainable in trainables:
        trainable.optimizer.zero_grad(set_to_none=True)
    sharded = any(is_sharded(t.module) for t in trainables)
    plan = _plan(rollout, rows, mini, objective.micro_unit, settings, sharded, anything)
    sums: dict[str, float] = {}
    for i, (micro_rows, real) in enumerate(plan):
        # DDP: one gradient-synchronising backward (the last); FSDP2: every backward reduce-scatters
        # its gradient into the sharded one (no full gradient is kept between micro-batches)
        with gradient_sync([t.caller for t in trainables], enabled=sharded or i == len(plan) - 1):
            loss, stats, micro = _micro_step(objective, signal, rollout, loss_mask, micro_rows, trainables[0].caller,
                                             norm, settings, float(world.size) if real else 0.0)
        if real:
            totals.add_micro(loss, stats, micro, sums)
    if anything:
        _step(trainables, totals)
    totals.updates += 1
    for name, value in sums.items():
        totals.sums[name] = totals.sums.get(name, 0.0) + value


def optimise(
    objective: Objective,
    signal: Any,
    rollout: Rollout,
    loss_mask: torch.Tensor,
    trainable_rows: torch.Tensor,
    trainables: list[Trainable],
    settings: LoopSettings,
) -> dict[str, float]:
    """mu passes of mini-batch optimizer steps over the batch; returns the averaged statistics.

    ``trainable_rows`` [N] bool marks rows whose loss can be non-zero: the others are skipped in the
    forward/backward but still count in the normalisers the method gives. Under torchrun the batch
    is this rank's share and the statistics are those of the global batch.
    """
    totals = _Totals()
    minis = mini_batches(rollout.num_completions, settings.mini_batches, rollout.group_size, objective.unit)
    for _ in range(settings.passes):
        for mini in minis:
            _mini_step(objective, signal, rollout, loss_mask, mini, trainable_rows, trainables, settings, totals)
    totals.reduce(settings.world)
    return totals.result()
