"""GRPO and its family (DeepSeekMath §4.1; Dr. GRPO, DAPO, GSPO, RLOO, DeGRPO via presets).

Data: online rollouts, G per prompt. Gradient coefficient: the group-relative advantage (outcome,
or process supervision from step scores: a PRM's, or the task's gold checker's), clipped, plus
beta x KL to the reference in the loss (docs/spec.md §2.2). Process supervision turns step rewards
into credit by ``algorithm.process_credit`` (DeepSeekMath's sum or PURE's min, spec §4.1) and may mix
in outcome supervision (``algorithm.process_outcome_weight``: the outcome advantage on every token).
"""

from __future__ import annotations

import time

import torch

from cohort import algo
from cohort.config import Config, ConfigError
from cohort.methods.base import Method, TrainingSignal, rows_of, take, take_if_present
from cohort.methods.checks import check_clip_settings, require_correctness
from cohort.methods.registry import register_method
from cohort.monitoring.panels import CLIP_FRACTION, KL, Panel
from cohort.optimisation.update import MicroBatch
from cohort.rewards.gate import check_reward_model_gate
from cohort.rewards.step_spans import step_tensors
from cohort.sources import OnlineRollouts, ScoredBatch, SourcePieces, StepTimer

GRPO_KEYS = frozenset({
    "preset", "advantage", "std_ddof", "adv_eps", "aggregation", "policy_loss", "eps_low", "eps_high", "dual_clip",
    "beta", "kl_estimator", "kl_clamp", "control_weight", "mu", "ref_reset_every", "dynamic_sampling",
    "dynamic_sampling_max_rounds", "overlong_filter", "overlong_buffer", "process_credit", "process_outcome_weight", "tis_cap",
})


def per_sample_advantage(advantages: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """One number per sample: the outcome advantage, or the token mean of a process advantage. -> [N]"""
    if advantages.dim() == 1:
        return advantages
    return algo.masked_mean(advantages, completion_mask[:, : advantages.shape[1]], dim=1)  # [N]


def group_advantages(config: Config, batch: ScoredBatch) -> algo.Advantages:
    """Outcome advantages [N] from the rewards, or process advantages [N, T] from the PRM's steps."""
    knobs, rollout = config.algorithm, batch.rollout
    if knobs.advantage == "process":
        lengths = rollout.completion_lengths.cpu()  # [N]
        step_rewards, step_ends, step_mask, scored = step_tensors(batch.steps, lengths)  # unalignable steps: unscored
        return algo.process_advantages(
            step_rewards, step_ends, step_mask, lengths, rollout.completion_ids.shape[1], batch.group_size,
            credit=knobs.process_credit, outcome_rewards=batch.scores.total.cpu(), outcome_weight=knobs.process_outcome_weight,
            ddof=knobs.std_ddof, eps=knobs.adv_eps, strict=config.reward.strict, scored=scored,
        )
    return algo.outcome_advantages(
        batch.scores.total, batch.group_size, estimator=knobs.advantage, ddof=knobs.std_ddof,
        eps=knobs.adv_eps, strict=config.reward.strict,
    )


def process_metrics(batch: ScoredBatch) -> dict[str, float]:
    """What process supervision optimises: the PRM's mean step score (first and last step too) and
    the steps per completion; a policy that games the PRM shows here before its accuracy falls."""
    step_rewards, _, step_mask, scored = step_tensors(batch.steps, batch.rollout.completion_lengths.cpu())  # [N, K], [N, K], [N]
    steps = step_mask.sum(dim=1)  # [N]
    has_steps = steps > 0  # [N]
    unscored = {"process/unscored_frac": float((~scored).double().mean())}
    if not bool(has_steps.any()):
        return {"process/steps_mean": 0.0, **unscored}
    last = step_rewards.gather(1, (steps.clamp(min=1) - 1).unsqueeze(1)).squeeze(1)  # [N]
    return {
        **unscored,
        "process/step_score_mean": float(step_rewards[step_mask].mean()),
        "process/first_step_score_mean": float(step_rewards[has_steps, 0].mean()),
        "process/last_step_score_mean": float(last[has_steps].mean()),
        "process/steps_mean": float(steps[scored].double().mean()) if bool(scored.any()) else 0.0,
    }


def check_process_settings(config: Config) -> None:
    """The process-credit keys (a registered credit form, a number, only with process supervision), the
    reward-model gate and iterative RL's reward-model patience."""
    a = config.algorithm
    if a.process_credit not in algo.PROCESS_CREDITS:
        raise ConfigError(f"algorithm.process_credit={a.process_credit!r} is not allowed: expected one of "
                          f"{', '.join(algo.PROCESS_CREDITS.names())}")
    if not isinstance(a.process_outcome_weight, (int, float)) or a.process_outcome_weight != a.process_outcome_weight:
        raise ConfigError(f"algorithm.process_outcome_weight={a.process_outcome_weight!r} is not allowed: expected a number")
    gate = config.reward.min_within_group_auc
    if gate is not None and not (isinstance(gate, (int, float)) and 0.0 <= gate <= 1.0):
        raise ConfigError(f"reward.min_within_group_auc={gate!r} is not allowed: expected a number in [0, 1], or null for no gate")
    patience = config.iterative.rm_patience
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(f"iterative.rm_patience={patience!r} is not allowed: expected an int >= 1, or null")
    if a.advantage != "process":
        for key, default in (("process_credit", "sum"), ("process_outcome_weight", 0.0)):
            if getattr(a, key) != default:
                raise ConfigError(f"algorithm.{key}={getattr(a, key)!r} is not allowed: it applies only with "
                                  "algorithm.advantage=process")


@register_method
class GRPO(Method):
    name = "grpo"
    summary = "online samples, group-relative advantage (outcome or process), clipped, KL to the reference in the loss"
    samples = "online"
    reads = frozenset({f"algorithm.{key}" for key in GRPO_KEYS} | {"iterative.*", "reward.process_model",
                                                                   "reward.min_within_group_auc"})
    panels = (
        KL,
        CLIP_FRACTION,
        Panel("frac-zero-std", "Groups with zero reward std (no signal)", "fraction", (("frac_zero_std", "zero-std groups"),)),
    )
    unit = "group"

    @classmethod
    def check(cls, config: Config) -> None:
        a = config.algorithm
        allowed = algo.OUTCOME_ESTIMATORS.names() + ["process"]
        if a.advantage not in allowed:
            raise ConfigError(f"algorithm.advantage={a.advantage!r} is not allowed: expected one of {', '.join(allowed)}")
        for key, registry in (("aggregation", algo.AGGREGATIONS), ("kl_estimator", algo.KL_ESTIMATORS)):
            if getattr(a, key) not in registry:
                raise ConfigError(f"algorithm.{key}={getattr(a, key)!r} is not allowed: expected one of {', '.join(registry.names())}")
        check_clip_settings(config)
        if a.kl_clamp is not None and not a.kl_clamp > 0:
            raise ConfigError(f"algorithm.kl_clamp={a.kl_clamp!r} is not allowed: expected a float > 0, or null for no cap")
        check_process_settings(config)
        needs_group = a.advantage == "process" or algo.OUTCOME_ESTIMATORS.get(a.advantage).needs_group
        if needs_group and config.rollout.group_size < 2:
            raise ConfigError(f"rollout.group_size={config.rollout.group_size} is not allowed: expected an int >= 2 "
                              f"(GRPO's {a.advantage} advantage compares the samples of a group)")

    @classmethod
    def check_data(cls, config: Config, task, rewards) -> None:
        if config.iterative.iterations:
            require_correctness("grpo with iterative reward-model training (labels come from the task's rule)", rewards)
        check_reward_model_gate(config)

    @classmethod
    def needs_reference(cls, config: Config) -> bool:
        return config.algorithm.beta > 0

    def source(self, pieces: SourcePieces) -> OnlineRollouts:
        a = self.config.algorithm
        return OnlineRollouts(pieces, dynamic_sampling=a.dynamic_sampling, max_rounds=a.dynamic_sampling_max_rounds)

    def signal(self, batch: ScoredBatch, timer: StepTimer) -> TrainingSignal:
        knobs, rollout = self.config.algorithm, batch.rollout
        result = group_advantages(self.config, batch)
        advantages = result.values.to(self.context.device, torch.float32)  # [N] or [N, T]
        keep = result.valid.to(rollout.completion_mask.device)  # [N]
        if knobs.overlong_filter:
            keep = keep & ~rollout.truncated
        loss_mask = rollout.completion_mask & keep.unsqueeze(1)  # [N, T]
        trainable = loss_mask.any(dim=1)  # [N]
        if knobs.beta == 0:
            # with no KL term a zero-advantage sequence adds nothing to loss or gradient: skip its
            # forward/backward, but keep it in the normalisers (it still counts in the means)
            trainable = trainable & (advantages != 0).reshape(rollout.num_completions, -1).any(dim=1)
        started = time.perf_counter()
        old, engine_metrics, tis_weights = self.old_logprobs(rollout, rows_of(trainable))  # [N, T]
        tensors = {"advantages": advantages, "old_logprobs": old}
        if tis_weights is not None:
            tensors["tis_weights"] = tis_weights
        if self.context.reference is not None:
            tensors["ref_logprobs"] = self.no_grad_logprobs(self.context.reference, rollout, rows_of(trainable))
        timer.logprob += time.perf_counter() - started
        metrics = {
            "frac_zero_std": batch.zero_std_groups / max(1, batch.sampled_groups),
            "advantage/abs_mean": float(per_sample_advantage(advantages, rollout.completion_mask).abs().mean()),
            "groups_sampled": batch.sampled_groups,
            **engine_metrics,
        }
        if knobs.advantage == "process":
            metrics.update(process_metrics(batch))
        per_sample = per_sample_advantage(advantages, rollout.completion_mask)  # [N]
        return TrainingSignal(loss_mask, trainable, tensors, metrics, per_sample=per_sample)

    def loss(self, micro: MicroBatch, signal: TrainingSignal, norm: algo.LossNormalizers):
        knobs, tensors = self.config.algorithm, signal.tensors
        loss, stats = algo.policy_loss(
            micro.logprobs,
            take(tensors["old_logprobs"], micro),
            take(tensors["advantages"], micro),
            micro.mask,
            ref_logprobs=take_if_present(tensors, "ref_logprobs", micro),
            beta=knobs.beta,
            kl_estimator=knobs.kl_estimator,
            kl_clamp=knobs.kl_clamp,
            loss=knobs.policy_loss,
            eps_low=knobs.eps_low,
            eps_high=knobs.eps_high,
            dual_clip=knobs.dual_clip,
            aggregation=knobs.aggregation,
            normalizers=norm,
            max_length=self.config.rollout.max_new_tokens,
            control_weight=knobs.control_weight,
            token_weights=take_if_present(tensors, "tis_weights", micro),
        )
        return loss, stats

    def metrics(self, batch: ScoredBatch, signal: TrainingSignal, stats: dict[str, float]) -> dict[str, float]:
        has_reference = self.context.reference is not None
        return {
            "kl": stats.get("kl", float("nan")) if has_reference else float("nan"),
            "kl_clamp_frac": stats.get("kl_clamp_frac", float("nan")) if has_reference else float("nan"),
            "clip_frac/low": stats.get("clip_frac_low", 0.0),
            "clip_frac/high": stats.get("clip_frac_high", 0.0),
            "ratio/mean": stats["ratio_sum"] / stats["trained_tokens"] if stats.get("trained_tokens") else float("nan"),
        }
