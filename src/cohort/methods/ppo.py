"""PPO as DeepSeekMath reviews it (§4.1.1, Eq. 1-2; docs/spec.md §1.1): a value model, GAE, two clipped losses.

Data: online rollouts. Reward per token: the reward functions' total at the last token, minus
``beta * (log pi_old - log pi_ref)`` at every token (Eq. 2, the KL inside the reward). Advantages:
GAE(gamma, lambda) with the value model, then whitened over the batch (``ppo.whiten_advantages``).
Losses: the clipped policy surrogate (no KL term: it is in the reward) and the clipped value loss.
The value model (its weights and optimizer) is checkpointed and resumed like the policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from cohort import algo
from cohort.config import Config, ConfigError
from cohort.distributed import World
from cohort.methods.base import Method, MethodContext, TrainingSignal, rows_of, take, take_if_present
from cohort.methods.checks import check_aggregation, check_clip_settings
from cohort.methods.registry import register_method
from cohort.models.value import completion_values, load_value_model
from cohort.monitoring.panels import CLIP_FRACTION, KL, Panel
from cohort.optimisation.batching import batch_inputs, even_micro_batches
from cohort.optimisation.update import MicroBatch, Trainable
from cohort.rollout import Rollout
from cohort.sources import OnlineRollouts, ScoredBatch, SourcePieces, StepTimer

VALUE_DIR = "value_model"


def whiten_over_ranks(world: World, values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """:func:`cohort.algo.masked_whiten` with the mean and variance of the global batch (all ranks),
    accumulated in float64 so that one process and N ranks agree to rounding. [N, T]"""
    count = world.sum(mask.sum().to(torch.float64))
    mean = world.sum(algo.masked_sum(values.double(), mask)) / count.clamp(min=1)
    centred = torch.where(mask, values.double() - mean, torch.zeros((), dtype=torch.float64, device=values.device))
    variance = world.sum(centred.square().sum()) / (count - 1).clamp(min=1)
    scale = torch.rsqrt(variance + eps) if float(count) > 1 else torch.ones((), dtype=torch.float64)
    return (centred * scale).to(values.dtype)


@dataclass
class PPOConfig:
    value_init: str = "policy"
    """Where the value model starts: 'policy' (the policy's weights and a new zero scalar head) or a path to a reward model / value model directory (its head is kept)."""
    value_lr: float | None = None
    """Learning rate of the value model's AdamW; null = optim.lr."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    value_clip: float = 0.2
    """Clip range of the value loss around the old values."""
    whiten_advantages: bool = True
    """Whiten the GAE advantages over the batch (mean 0, std 1), as verl and OpenRLHF do."""

    def check(self) -> None:
        rules = (
            (self.value_lr is None or self.value_lr > 0, "value_lr", self.value_lr, "null or a float > 0"),
            (0 <= self.gamma <= 1, "gamma", self.gamma, "a float in [0, 1]"),
            (0 <= self.lam <= 1, "lam", self.lam, "a float in [0, 1]"),
            (self.value_clip > 0, "value_clip", self.value_clip, "a float > 0"),
            (bool(self.value_init), "value_init", self.value_init, "'policy' or a model directory"),
        )
        for ok, key, value, expected in rules:
            if not ok:
                raise ConfigError(f"ppo.{key}={value!r} is not allowed: expected {expected}")


@register_method
class PPO(Method):
    name = "ppo"
    summary = "online samples, GAE advantages from a value model, per-token KL in the reward, clipped policy and value losses"
    samples = "online"
    config_section = ("ppo", PPOConfig)
    reads = frozenset({f"algorithm.{key}" for key in ("aggregation", "policy_loss", "eps_low", "eps_high", "dual_clip", "beta",
                                                      "mu", "ref_reset_every", "overlong_filter", "overlong_buffer", "tis_cap")})
    panels = (
        KL,
        Panel("value-loss", "Value model: clipped value loss", "loss", (("value/loss", "value loss"),)),
        Panel("value-fit", "Value model: explained variance of the returns", "fraction",
              (("value/explained_variance", "explained variance"),)),
        Panel("kl-in-reward", "KL penalty in the reward (beta x KL, per sequence)", "reward", (("kl_in_reward", "beta x KL"),)),
        CLIP_FRACTION,
    )

    @classmethod
    def check(cls, config: Config) -> None:
        check_aggregation(config)
        check_clip_settings(config)

    @classmethod
    def needs_reference(cls, config: Config) -> bool:
        return config.algorithm.beta > 0

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        init = self.config.ppo.value_init
        if context.resume_from is not None:
            source, from_policy = context.resume_from / VALUE_DIR, False  # continue from the checkpoint's value model
        else:
            source, from_policy = (context.model_path, True) if init == "policy" else (init, False)
        self.value_model = load_value_model(
            source, from_policy=from_policy, dtype=self.config.model.dtype, device=context.device,
            trust_remote_code=self.config.model.trust_remote_code,
        )
        if self.value_model.config.vocab_size != context.policy.config.vocab_size:
            raise ValueError(f"ppo.value_init={init!r} has a vocabulary of {self.value_model.config.vocab_size} tokens; "
                             f"the policy's has {context.policy.config.vocab_size}: they must share the tokenizer")
        forward = context.wrap(self.value_model)  # FSDP2 shards it in place; DDP returns a wrapper
        self.value_forward = forward
        optimizer, scheduler = context.build_optimizer(self.value_model, self.config.ppo.value_lr or self.config.optim.lr)
        self.value = Trainable("value", self.value_model, optimizer, scheduler, self.config.optim.max_grad_norm,
                               forward=forward if forward is not self.value_model else None)

    def trainables(self) -> list[Trainable]:
        return [self.value]

    def source(self, pieces: SourcePieces) -> OnlineRollouts:
        return OnlineRollouts(pieces)

    @torch.no_grad()
    def _values(self, rollout: Rollout, rows: list[int]) -> torch.Tensor:
        """V(s_t) of every completion token of ``rows`` before the update. -> [N, T]"""
        out = torch.zeros(rollout.completion_ids.shape, dtype=torch.float32, device=rollout.completion_ids.device)
        optim = self.config.optim
        for micro, real in even_micro_batches(self.value_model, rollout, rows, optim.micro_batch_size, optim.micro_batch_tokens):
            with self.context.autocast():
                values = completion_values(self.value_model, *batch_inputs(rollout, micro, out.device))  # [n, T']
            if real:  # FSDP2: a rank with fewer micro-batches runs padding forwards (cohort.optimisation.batching)
                out[torch.tensor(micro, device=out.device), : values.shape[1]] = values
        return out

    def _token_rewards(self, batch: ScoredBatch, loss_mask: torch.Tensor, old: torch.Tensor, ref: torch.Tensor | None):
        """r_t = score at the last token - beta * (log pi_old - log pi_ref) (Eq. 2). -> ([N, T], KL per token [N, T])"""
        kl = torch.zeros_like(old) if ref is None else torch.where(loss_mask, old - ref, torch.zeros_like(old))  # [N, T]
        rewards = -self.config.algorithm.beta * kl  # [N, T]
        score = torch.nan_to_num(batch.scores.total, nan=0.0).to(old.device, torch.float32)  # [N]
        last = (batch.rollout.completion_lengths - 1).clamp(min=0)  # [N]
        rewards[torch.arange(rewards.shape[0], device=old.device), last] += score
        return rewards, kl

    def signal(self, batch: ScoredBatch, timer: StepTimer) -> TrainingSignal:
        knobs, rollout = self.config.algorithm, batch.rollout
        keep = ~torch.isnan(batch.scores.total).to(rollout.completion_ids.device)  # [N]
        if knobs.overlong_filter:
            keep = keep & ~rollout.truncated
        loss_mask = rollout.completion_mask & keep.unsqueeze(1)  # [N, T]
        rows = rows_of(keep)
        started = time.perf_counter()
        old, engine_metrics, tis_weights = self.old_logprobs(rollout, rows)  # [N, T]
        ref = self.no_grad_logprobs(self.context.reference, rollout, rows) if self.context.reference is not None else None
        values = self._values(rollout, rows)  # [N, T]
        timer.logprob += time.perf_counter() - started
        rewards, kl = self._token_rewards(batch, loss_mask, old, ref)
        advantages, returns = algo.gae_advantages(rewards, values, loss_mask, self.config.ppo.gamma, self.config.ppo.lam)
        raw_mean = float(algo.masked_mean(advantages, loss_mask))
        if self.config.ppo.whiten_advantages:
            advantages = whiten_over_ranks(self.context.world, advantages, loss_mask)
        metrics = {
            "kl": float(algo.masked_mean(kl, loss_mask)) if ref is not None else float("nan"),
            "kl_in_reward": float(self.config.algorithm.beta * algo.masked_sum(kl, loss_mask) / max(1, len(rows))),
            "value/mean": float(algo.masked_mean(values, loss_mask)),
            "value/explained_variance": float(algo.explained_variance(values, returns, loss_mask)),
            "returns/mean": float(algo.masked_mean(returns, loss_mask)),
            "advantage/mean": raw_mean,
            **engine_metrics,
        }
        tensors = {"advantages": advantages, "old_logprobs": old, "old_values": values, "returns": returns}
        if tis_weights is not None:
            tensors["tis_weights"] = tis_weights
        per_sample = algo.masked_mean(advantages, loss_mask, dim=1)  # [N]
        return TrainingSignal(loss_mask, keep & loss_mask.any(dim=1), tensors, metrics, per_sample=per_sample)

    def loss(self, micro: MicroBatch, signal: TrainingSignal, norm: algo.LossNormalizers):
        knobs, tensors = self.config.algorithm, signal.tensors
        policy, stats = algo.policy_loss(
            micro.logprobs, take(tensors["old_logprobs"], micro), take(tensors["advantages"], micro), micro.mask,
            loss=knobs.policy_loss, eps_low=knobs.eps_low, eps_high=knobs.eps_high, dual_clip=knobs.dual_clip,
            aggregation=knobs.aggregation, normalizers=norm, max_length=self.config.rollout.max_new_tokens,
            token_weights=take_if_present(tensors, "tis_weights", micro),
        )
        with self.context.autocast():
            values = completion_values(self.value_forward, *micro.inputs)  # [n, T'] with gradient
        value, value_stats = algo.clipped_value_loss(
            values, take(tensors["old_values"], micro), take(tensors["returns"], micro), micro.mask,
            clip_range=self.config.ppo.value_clip, normalizers=norm,
        )
        stats.pop("kl")
        stats.update(policy_loss=policy.detach(), value_loss=value.detach(), **value_stats)
        return policy + value, stats

    def metrics(self, batch: ScoredBatch, signal: TrainingSignal, stats: dict[str, float]) -> dict[str, float]:
        return {
            "policy_loss": stats.get("policy_loss", float("nan")),
            "value/loss": stats.get("value_loss", float("nan")),
            "value/clip_frac": stats.get("value_clip_frac", float("nan")),
            "clip_frac/low": stats.get("clip_frac_low", 0.0),
            "clip_frac/high": stats.get("clip_frac_high", 0.0),
            "ratio/mean": stats["ratio_sum"] / stats["trained_tokens"] if stats.get("trained_tokens") else float("nan"),
        }

    def models(self) -> dict[str, torch.nn.Module]:
        return {VALUE_DIR: self.value_model}
