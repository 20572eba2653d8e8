"""AdamW and the learning-rate schedules (constant / cosine / linear, each with linear warm-up)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def lr_multiplier(step: int, *, schedule: str, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Factor on the base lr for training step ``step`` (0-based).

    Warm-up rises linearly to 1 over ``warmup_steps`` (the first step already trains, at
    1/(warmup+1)); then constant, or cosine / linear decay to ``min_ratio`` at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    raise ValueError(f"schedule must be constant, cosine or linear, got {schedule!r}")


def _fused_kernel_applies(parameters: list[torch.nn.Parameter]) -> bool:
    """Whether AdamW's fused kernel (one pass over all parameters instead of a loop of small
    ops per tensor; on CPU the default is that loop) supports every parameter: floating point on
    CPU or CUDA."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    eps: float,
    schedule: str,
    total_steps: int,
    warmup_steps: int,
    min_ratio: float,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters and a LambdaLR stepped once per training step."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(
        trainable, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, fused=_fused_kernel_applies(trainable)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(
            step, schedule=schedule, total_steps=total_steps, warmup_steps=warmup_steps, min_ratio=min_ratio
        ),
    )
    return optimizer, scheduler


def hyperparameters(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> dict:
    """The settings an optimizer and its schedule were built with (not their state): per-group
    hyperparameters (betas, eps, weight decay, ...) and the schedule's base learning rates."""
    groups = [{key: value for key, value in group.items() if key not in ("params", "lr", "initial_lr")}
              for group in optimizer.param_groups]
    return {"groups": groups, "base_lrs": list(scheduler.base_lrs)}


def apply_hyperparameters(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, settings: dict) -> None:
    """Put ``settings`` (from :func:`hyperparameters`) back after a state was loaded that carries
    other ones (a resume that accepted changed settings): the schedule continues at its step with
    the new base learning rates, and the moments (exp_avg, ...) are kept."""
    scheduler.base_lrs = list(settings["base_lrs"])
    scheduler.last_epoch = max(0, scheduler.last_epoch)
    for group, values, base, multiplier in zip(optimizer.param_groups, settings["groups"], scheduler.base_lrs, scheduler.lr_lambdas):
        group.update(values)
        group["initial_lr"] = base
        group["lr"] = base * multiplier(scheduler.last_epoch)
