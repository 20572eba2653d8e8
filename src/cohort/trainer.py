"""The online GRPO loop (spec §5, DeepSeekMath Algorithm 1), readable top to bottom.

Each training step: sample P prompts x G completions (rollout), score them (rewards), turn the
group statistics into advantages (algo), then make ``mu`` optimisation passes over the batch in
mini-batches with gradient accumulation (algo's loss with whole-mini-batch normalisers). The
reference model exists only when beta > 0 and is reset to the policy every ``ref_reset_every``
steps (iterative GRPO).
"""

from __future__ import annotations

import logging
import random
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cohort import algo
from cohort.assets import resolve_builtin
from cohort.checkpoint import (
    RunDirectory,
    capture_rng_state,
    load_trainer_state,
    prune_checkpoints,
    restore_rng_state,
    save_pretrained_atomic,
    truncate_jsonl,
)
from cohort.config import Config, save_config
from cohort.components import (
    PromptRenderer,
    build_rewards,
    evaluate_held_out,
    load_config_task,
    model_path,
    read_eval,
    sampling_params,
    write_eval,
)
from cohort.data.sampler import PromptSampler
from cohort.data.tasks import Task, format_prompt, row_columns, rows_at
from cohort.evaluate import EvalSummary
from cohort.models import (
    autocast_context,
    completion_logprobs,
    completion_logprobs_and_entropy,
    load_policy,
    load_reference,
    load_tokenizer,
    resolve_device,
)
from cohort.monitor import MetricsWriter, RunConsole, comparison_table
from cohort.optim import build_optimizer
from cohort.report import write_report
from cohort.rewards import RewardFunctionError, RewardScorer, RewardScores, correctness_reward
from cohort.rewards.process_model import ProcessRewardModel, StepScores, step_tensors
from cohort.rewards.registry import construct
from cohort.rollout import Rollout, generate_rollout
from cohort.rollout.batch import concat_rollouts

logger = logging.getLogger(__name__)


@dataclass
class ScoredBatch:
    """One training step's samples: the rollout, what produced it, and how it scored."""

    rollout: Rollout
    prompts: list[Any]  # [P] prompt as given to the rewards
    columns: dict[str, list[Any]]  # dataset columns, [P] each
    completions: list[str]  # [N] decoded completions
    scores: RewardScores  # [N]
    sampled_groups: int = 0  # groups sampled, including those dynamic sampling dropped
    zero_std_groups: int = 0  # of those, groups with no reward spread
    steps: list[StepScores | None] | None = None  # [N] process-reward step scores (process supervision)

    @property
    def group_size(self) -> int:
        return self.rollout.group_size

    def select_groups(self, groups: list[int]) -> "ScoredBatch":
        g = self.group_size
        rows = [group * g + i for group in groups for i in range(g)]
        index = torch.tensor(rows, dtype=torch.long)
        return ScoredBatch(
            rollout=self.rollout.select_groups(groups),
            prompts=[self.prompts[group] for group in groups],
            columns={key: [values[group] for group in groups] for key, values in self.columns.items()},
            completions=[self.completions[row] for row in rows],
            scores=RewardScores(
                total=self.scores.total[index],
                per_function={name: values[index] for name, values in self.scores.per_function.items()},
                failures=dict(self.scores.failures),
            ),
            sampled_groups=self.sampled_groups,
            zero_std_groups=self.zero_std_groups,
            steps=None if self.steps is None else [self.steps[row] for row in rows],
        )

    @staticmethod
    def concat(parts: list["ScoredBatch"]) -> "ScoredBatch":
        names = parts[0].scores.per_function
        return ScoredBatch(
            rollout=concat_rollouts([p.rollout for p in parts]),
            prompts=[prompt for p in parts for prompt in p.prompts],
            columns={key: [v for p in parts for v in p.columns[key]] for key in parts[0].columns},
            completions=[c for p in parts for c in p.completions],
            scores=RewardScores(
                total=torch.cat([p.scores.total for p in parts]),
                per_function={name: torch.cat([p.scores.per_function[name] for p in parts]) for name in names},
                failures={name: sum(p.scores.failures.get(name, 0) for p in parts) for name in names},
            ),
            sampled_groups=sum(p.sampled_groups for p in parts),
            zero_std_groups=sum(p.zero_std_groups for p in parts),
            steps=None if parts[0].steps is None else [s for p in parts for s in p.steps],
        )


def per_sample_columns(columns: dict[str, list[Any]], rollout: Rollout) -> dict[str, list[Any]]:
    """Per-prompt dataset columns repeated for each of the G samples, plus ``completion_ids``."""
    g = rollout.group_size
    expanded = {key: [value for value in values for _ in range(g)] for key, values in columns.items()}
    expanded["completion_ids"] = rollout.completion_token_lists()
    return expanded


def per_sample_advantage(advantages: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """One number per sample: the outcome advantage, or the token mean of a process advantage. -> [N]"""
    if advantages.dim() == 1:
        return advantages
    return algo.masked_mean(advantages, completion_mask[:, : advantages.shape[1]], dim=1)  # [N]


@dataclass
class StepTimer:
    """Seconds spent in each phase of a step."""

    rollout: float = 0.0
    reward: float = 0.0
    logprob: float = 0.0
    train: float = 0.0
    started: float = field(default_factory=time.perf_counter)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains ``config.model`` on ``config.data`` with the configured GRPO-family algorithm."""

    def __init__(self, config: Config, console: RunConsole | None = None) -> None:
        self.config = config
        self.console = console or RunConsole(config.log.console, config.train.steps)
        self.run_dir = RunDirectory(Path(config.train.out_dir))
        self.resume_from = self.run_dir.prepare(resume=config.train.resume, overwrite=config.train.overwrite)
        self.console.attach_log_file(self.run_dir.log)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        seed_everything(config.train.seed)
        self.device = resolve_device(config.model.device)
        self.generator = torch.Generator(device=self.device).manual_seed(config.train.seed)

        # cheap checks first: data and rewards fail before any model is loaded
        self.task: Task = load_config_task(config)
        format_prompt(self.task.train[0], config.data.prompt_template, self.task.prompt_column)
        self.rewards = build_rewards(config, self.task)
        self.scorer = RewardScorer(self.rewards, timeout_s=config.reward.timeout_s, strict=config.reward.strict)
        self.correctness = correctness_reward(self.rewards)
        for reward in self.rewards:
            if hasattr(reward.fn, "isolation"):
                self.console.info(f"reward {reward.name!r}: programs run in a sandbox with {reward.fn.isolation}")

        path = model_path(config)
        self.tokenizer = load_tokenizer(path, trust_remote_code=config.model.trust_remote_code)
        self.renderer = PromptRenderer.from_config(config, self.task, self.tokenizer)
        self.process_model = None
        if config.reward.process_model:
            options = dict(config.reward.process_model)
            prm_path = options.pop("path")
            self.process_model = construct(
                "process_model", lambda **kw: ProcessRewardModel(prm_path, self.tokenizer, **kw), options
            )
        self.policy = load_policy(
            self.resume_from or path,  # a resumed run continues from the checkpoint's weights
            dtype=config.model.dtype,
            device=self.device,
            trust_remote_code=config.model.trust_remote_code,
        )
        if config.model.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable()
        self.reference = None
        if config.algorithm.beta > 0:
            self.reference = load_reference(
                resolve_builtin(config.model.reference_path) if config.model.reference_path else path,
                dtype=config.model.dtype,
                device=self.device,
                trust_remote_code=config.model.trust_remote_code,
            )
        self.reference_was_reset = False
        self.sampling = sampling_params(config, self.tokenizer, self.policy)
        self.sampler = PromptSampler(len(self.task.train), seed=config.train.seed, shuffle=config.data.shuffle)
        self.optimizer, self.scheduler = build_optimizer(
            self.policy.parameters(),
            lr=config.optim.lr,
            betas=config.optim.betas,
            weight_decay=config.optim.weight_decay,
            eps=config.optim.adam_eps,
            schedule=config.optim.schedule,
            total_steps=config.train.steps,
            warmup_steps=config.optim.warmup_steps,
            min_ratio=config.optim.min_lr_ratio,
        )
        self.step = 0
        if self.resume_from is not None:
            self._restore(self.resume_from)
        save_config(config, self.run_dir.config)
        self.writer = MetricsWriter(
            self.run_dir.metrics,
            self.run_dir.completions,
            self.run_dir.root if config.log.tensorboard else None,
            start_step=self.step,
        )
        self.step_times: list[float] = []

    # --- one training step ------------------------------------------------------------------------

    def autocast(self):
        """The configured model.autocast precision for a forward (a no-op when unset)."""
        return autocast_context(self.device, self.config.model.autocast)

    def _sample_and_score(self, rows: list[dict[str, Any]], timer: StepTimer) -> ScoredBatch:
        """Roll out G completions for each row's prompt and score them."""
        prompts = [self.renderer.prompt(row) for row in rows]
        started = time.perf_counter()
        with self.autocast():
            rollout = generate_rollout(
                self.policy,
                self.renderer.encode(prompts),
                self.config.rollout.group_size,
                self.sampling,
                pad_token_id=self.tokenizer.pad_token_id,
                generator=self.generator,
                tokenizer=self.tokenizer,
            )
        completions = rollout.decode_completions(self.tokenizer)
        timer.rollout += time.perf_counter() - started
        started = time.perf_counter()
        columns = row_columns(rows)
        reward_prompts = [p for p in prompts for _ in range(rollout.group_size)]
        scores = self.scorer.score(reward_prompts, completions, per_sample_columns(columns, rollout))
        zero_std = int(algo.degenerate_groups(scores.total, rollout.group_size).sum())
        steps = self._score_steps(reward_prompts, completions, rollout) if self.process_model else None
        timer.reward += time.perf_counter() - started
        return ScoredBatch(
            rollout, prompts, columns, completions, scores, sampled_groups=len(rows), zero_std_groups=zero_std, steps=steps
        )

    def _score_steps(self, prompts: list[Any], completions: list[str], rollout: Rollout) -> list[StepScores | None]:
        """Process-reward step scores; a failing PRM scores nothing this step (None) unless strict."""
        try:
            return self.process_model(prompts, completions, rollout.completion_token_lists())
        except Exception as err:
            if self.config.reward.strict:
                raise RewardFunctionError(f"process reward model failed: {err}") from err
            logger.warning("process reward model failed (%s); this step's samples get no advantage", err)
            return [None] * len(completions)

    def collect_batch(self, timer: StepTimer) -> ScoredBatch:
        """P groups for this step; with dynamic sampling, only groups whose rewards differ (DAPO)."""
        wanted = self.config.rollout.prompts_per_step
        dynamic = self.config.algorithm.dynamic_sampling
        parts, kept, sampled, zero_std = [], 0, 0, 0
        rounds = self.config.algorithm.dynamic_sampling_max_rounds if dynamic else 1
        for _ in range(rounds):
            rows = rows_at(self.task.train, self.sampler.next_indices(wanted))
            part = self._sample_and_score(rows, timer)
            sampled, zero_std = sampled + part.sampled_groups, zero_std + part.zero_std_groups
            last_sampled = part
            if dynamic:
                informative = (~algo.degenerate_groups(part.scores.total, part.group_size)).nonzero().flatten().tolist()
                part = part.select_groups(informative[: wanted - kept])
            if part.rollout.num_prompts:
                parts.append(part)
            kept += part.rollout.num_prompts
            if kept >= wanted:
                break
        if not parts:  # nothing informative at all: train on the last round (its advantages are all 0)
            parts = [last_sampled]
        if dynamic and kept < wanted:
            self.console.info(f"dynamic sampling: {kept}/{wanted} informative groups after {rounds} rounds")
        batch = ScoredBatch.concat(parts)
        batch.sampled_groups, batch.zero_std_groups = sampled, zero_std
        return batch

    def advantages(self, batch: ScoredBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages ([N] outcome or [N, T] process) and the loss mask [N, T] (invalid, overlong filter)."""
        knobs = self.config.algorithm
        rollout = batch.rollout
        if knobs.advantage == "process":
            step_rewards, step_ends, step_mask, scored = step_tensors(batch.steps)
            result = algo.process_advantages(
                step_rewards, step_ends, step_mask, rollout.completion_lengths.cpu(), rollout.completion_ids.shape[1],
                batch.group_size, ddof=knobs.std_ddof, eps=knobs.adv_eps, strict=self.config.reward.strict, scored=scored,
            )
        else:
            result = algo.outcome_advantages(
                batch.scores.total,
                batch.group_size,
                estimator=knobs.advantage,
                ddof=knobs.std_ddof,
                eps=knobs.adv_eps,
                strict=self.config.reward.strict,
            )
        keep = result.valid.to(rollout.completion_mask.device)  # [N]
        if knobs.overlong_filter:
            keep = keep & ~rollout.truncated
        loss_mask = rollout.completion_mask & keep.unsqueeze(1)  # [N, T]
        return result.values.to(self.device, torch.float32), loss_mask

    def _micro_batches(self, rows: list[int], lengths: torch.Tensor) -> list[list[int]]:
        """Rows sorted by length and cut into micro-batches, so each one pads little."""
        ordered = sorted(rows, key=lambda r: int(lengths[r]))
        size = self.config.optim.micro_batch_size
        return [ordered[i : i + size] for i in range(0, len(ordered), size)]

    def _inputs(self, rollout: Rollout, rows: list[int]) -> tuple[torch.Tensor, ...]:
        """Prompt and completion tensors of ``rows``, trimmed to the widths those rows need."""
        index = torch.tensor(rows, device=self.device)
        prompt_ids, prompt_mask = rollout.expanded_prompts()  # [N, Lp]
        prompt_ids, prompt_mask = prompt_ids[index], prompt_mask[index]  # [n, Lp]
        prompt_width = int(prompt_mask.sum(1).max())
        completion_mask = rollout.completion_mask[index]  # [n, T]
        width = max(1, int(completion_mask.sum(1).max()))
        return (
            prompt_ids[:, -prompt_width:],  # [n, Lp']
            prompt_mask[:, -prompt_width:],  # [n, Lp']
            rollout.completion_ids[index, :width],  # [n, T']
            completion_mask[:, :width],  # [n, T']
        )

    @torch.no_grad()
    def _logprobs_without_grad(self, model, rollout: Rollout, rows: list[int]) -> torch.Tensor:
        """Log-probs of every completion under ``model`` (pi_old or reference), micro-batched. -> [N, T]"""
        out = torch.zeros(rollout.completion_ids.shape, dtype=torch.float32, device=self.device)  # [N, T]
        lengths = rollout.completion_lengths
        for micro in self._micro_batches(rows, lengths):
            prompt_ids, prompt_mask, completion_ids, completion_mask = self._inputs(rollout, micro)
            with self.autocast():
                logprobs = completion_logprobs(
                    model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=rollout.logprob_temperature
                )  # [n, T']
            out[torch.tensor(micro, device=self.device), : logprobs.shape[1]] = logprobs
        return out

    def update(self, batch: ScoredBatch, advantages: torch.Tensor, loss_mask: torch.Tensor, timer: StepTimer) -> dict[str, float]:
        """mu passes of mini-batch optimiser steps over the batch; returns averaged loss statistics."""
        knobs = self.config.algorithm
        rollout = batch.rollout
        n = rollout.num_completions
        trainable = loss_mask.any(dim=1)  # [N]
        if knobs.beta == 0:
            # with no KL term a zero-advantage sequence adds nothing to loss or gradient: skip its
            # forward/backward, but keep it in the normalisers (it still counts in the means)
            trainable = trainable & (advantages != 0).reshape(n, -1).any(dim=1)
        started = time.perf_counter()
        all_rows = list(range(n))
        old_logprobs = rollout.sampling_logprobs  # mu = 1: pi_old is the sampling policy itself
        if knobs.mu > 1:
            old_logprobs = self._logprobs_without_grad(self.policy, rollout, [r for r in all_rows if trainable[r]])
        ref_logprobs = None
        if self.reference is not None:
            ref_logprobs = self._logprobs_without_grad(self.reference, rollout, [r for r in all_rows if trainable[r]])
        timer.logprob += time.perf_counter() - started

        started = time.perf_counter()
        mini_batches = [list(chunk) for chunk in np.array_split(np.arange(n), min(self.config.optim.mini_batches, n))]
        lengths = rollout.completion_lengths
        totals: dict[str, float] = {}
        entropy_sum, ratio_sum, trained_tokens, grad_norms, updates = 0.0, 0.0, 0, [], 0
        for _ in range(knobs.mu):
            for mini in mini_batches:
                mini = [int(r) for r in mini]
                normalizers = algo.LossNormalizers.from_mask(loss_mask[mini])
                rows = [r for r in mini if trainable[r]]
                self.optimizer.zero_grad(set_to_none=True)
                sums: dict[str, float] = {"loss": 0.0}
                for micro in self._micro_batches(rows, lengths):
                    prompt_ids, prompt_mask, completion_ids, completion_mask = self._inputs(rollout, micro)
                    width = completion_ids.shape[1]
                    index = torch.tensor(micro, device=self.device)
                    with self.autocast():  # the backward runs each op in the dtype its forward used
                        logprobs, entropy = completion_logprobs_and_entropy(
                            self.policy, prompt_ids, prompt_mask, completion_ids, completion_mask,
                            temperature=rollout.logprob_temperature,
                        )  # [n, T'] each, float32
                    mask = loss_mask[index, :width]  # [n, T']
                    token_advantages = advantages[index] if advantages.dim() == 1 else advantages[index, :width]
                    loss, stats = algo.policy_loss(
                        logprobs,
                        old_logprobs[index, :width],
                        token_advantages,
                        mask,
                        ref_logprobs=None if ref_logprobs is None else ref_logprobs[index, :width],
                        beta=knobs.beta,
                        kl_estimator=knobs.kl_estimator,
                        eps_low=knobs.eps_low,
                        eps_high=knobs.eps_high,
                        dual_clip=knobs.dual_clip,
                        ratio_level=knobs.ratio_level,
                        aggregation=knobs.aggregation,
                        normalizers=normalizers,
                        max_length=self.config.rollout.max_new_tokens,
                        control_weight=knobs.control_weight,
                    )
                    loss.backward()
                    sums["loss"] += float(loss.detach())
                    for name in ("clip_frac_low", "clip_frac_high", "kl"):
                        sums[name] = sums.get(name, 0.0) + float(stats[name])
                    # ratio and entropy: means over the tokens actually trained on
                    ratio_sum += float(stats["ratio_mean"]) * float(normalizers.num_tokens)
                    entropy_sum += float(algo.masked_sum(entropy, mask))
                    trained_tokens += int(mask.sum())
                if rows:
                    limit = self.config.optim.max_grad_norm or float("inf")
                    grad_norms.append(float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), limit)))
                    self.optimizer.step()
                updates += 1
                for name, value in sums.items():
                    totals[name] = totals.get(name, 0.0) + value
        timer.train += time.perf_counter() - started
        result = {name: value / updates for name, value in totals.items()}
        result["entropy"] = entropy_sum / trained_tokens if trained_tokens else float("nan")
        result["ratio_mean"] = ratio_sum / trained_tokens if trained_tokens else float("nan")
        result["grad_norm"] = statistics.fmean(grad_norms) if grad_norms else 0.0
        result["trained_frac"] = float(trainable.float().mean())
        return result

    def train_step(self) -> dict[str, Any]:
        """One full step: (reference reset), sample, score, advantages, update, metrics."""
        timer = StepTimer()
        every = self.config.algorithm.ref_reset_every
        if self.reference is not None and every and self.step > 0 and self.step % every == 0:
            self.reference.load_state_dict(self.policy.state_dict())
            self.reference_was_reset = True
            self.console.info(f"step {self.step}: reference model reset to the current policy")
        lr = self.optimizer.param_groups[0]["lr"]
        batch = self.collect_batch(timer)
        advantages, loss_mask = self.advantages(batch)
        stats = self.update(batch, advantages, loss_mask, timer)
        with warnings.catch_warnings():  # a step with no informative sample makes no optimizer step; that is fine
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        self.step += 1
        metrics = self._metrics(batch, advantages, stats, timer, lr)
        if self.config.log.completions_every and self.step % self.config.log.completions_every == 0:
            self.writer.write_completions(self._completion_records(batch, advantages))
        return metrics

    # --- metrics ----------------------------------------------------------------------------------

    def _metrics(self, batch: ScoredBatch, advantages: torch.Tensor, stats: dict[str, float], timer: StepTimer, lr: float) -> dict[str, Any]:
        total = batch.scores.total
        valid = ~torch.isnan(total)
        lengths = batch.rollout.completion_lengths.float()
        step_time = time.perf_counter() - timer.started
        self.step_times.append(step_time)
        metrics: dict[str, Any] = {
            "step": self.step,
            "reward/mean": float(total[valid].mean()) if valid.any() else float("nan"),
            "reward/std": float(total[valid].std()) if int(valid.sum()) > 1 else 0.0,
        }
        for name, values in batch.scores.per_function.items():
            ok = ~torch.isnan(values)
            metrics[f"reward/{name}/mean"] = float(values[ok].mean()) if ok.any() else float("nan")
        if self.correctness is not None:
            scores = batch.scores.per_function[self.correctness.name]
            ok = ~torch.isnan(scores)
            metrics["accuracy"] = float((scores[ok] >= 1.0 - 1e-9).float().mean()) if ok.any() else float("nan")
        metrics.update(
            {
                "reward/none_frac": float((~valid).float().mean()),
                "reward/failures": sum(batch.scores.failures.values()),
                "frac_zero_std": batch.zero_std_groups / max(1, batch.sampled_groups),
                "advantage/abs_mean": float(per_sample_advantage(advantages, batch.rollout.completion_mask).abs().mean()),
                "kl": stats.get("kl", float("nan")) if self.reference is not None else float("nan"),
                "clip_frac/low": stats.get("clip_frac_low", 0.0),
                "clip_frac/high": stats.get("clip_frac_high", 0.0),
                "ratio/mean": stats.get("ratio_mean", float("nan")),
                "entropy": stats["entropy"],
                "completion_len/mean": float(lengths.mean()),
                "completion_len/max": int(lengths.max()),
                "truncated_frac": float(batch.rollout.truncated.float().mean()),
                "loss": stats.get("loss", 0.0),
                "grad_norm": stats["grad_norm"],
                "lr": lr,
                "trained_frac": stats["trained_frac"],
                "groups_sampled": batch.sampled_groups,
                "time/rollout_s": timer.rollout,
                "time/reward_s": timer.reward,
                "time/logprob_s": timer.logprob,
                "time/train_s": timer.train,
                "time/step_s": step_time,
                "tokens_per_s": float(lengths.sum()) / step_time,
            }
        )
        return metrics

    def _completion_records(self, batch: ScoredBatch, advantages: torch.Tensor) -> list[dict[str, Any]]:
        g = batch.group_size
        advantages = per_sample_advantage(advantages, batch.rollout.completion_mask)
        limit = min(self.config.log.completions_per_step, len(batch.completions))
        lengths = batch.rollout.completion_lengths.tolist()
        records = []
        for row in range(limit):
            records.append(
                {
                    "step": self.step,
                    "group": row // g,
                    "prompt": batch.prompts[row // g],
                    "completion": batch.completions[row],
                    "reward": float(batch.scores.total[row]),
                    "rewards": {name: float(v[row]) for name, v in batch.scores.per_function.items()},
                    "advantage": float(advantages[row]),
                    "length": lengths[row],
                    "finish_reason": batch.rollout.finish_reasons[row],
                }
            )
        return records

    # --- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        destination = self.run_dir.checkpoints / f"step-{self.step}"
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": capture_rng_state(self.generator),
            "reference_was_reset": self.reference_was_reset,
        }
        if self.reference is not None and self.reference_was_reset:
            state["reference"] = {k: v.detach().cpu().clone() for k, v in self.reference.state_dict().items()}
        save_pretrained_atomic(destination, self.policy, self.tokenizer, extra=state)
        prune_checkpoints(self.run_dir, self.config.train.keep_checkpoints)
        return destination

    def _restore(self, checkpoint: Path) -> None:
        state = load_trainer_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        restore_rng_state(state["rng"], self.generator)
        self.reference_was_reset = state["reference_was_reset"]
        if self.reference is not None and "reference" in state:
            self.reference.load_state_dict(state["reference"])
        self.step = state["step"]
        truncate_jsonl(self.run_dir.metrics, self.step)
        truncate_jsonl(self.run_dir.completions, self.step)
        self.console.info(f"resumed from {checkpoint} at step {self.step}")

    # --- evaluation -------------------------------------------------------------------------------

    def evaluate(self, label: str) -> EvalSummary | None:
        """Held-out evaluation, written to eval_<label>.json(l); reused if a resumed run has it."""
        if self.task.test is None or self.correctness is None:
            return None
        summary_path = self.run_dir.eval_summary(label)
        if summary_path.exists():
            return read_eval(summary_path)
        self.console.info(f"evaluating ({label}) on the held-out problems ...")
        summary, problems = evaluate_held_out(
            self.config, self.task, self.policy, self.tokenizer, self.rewards, num_samples=self.config.train.eval_samples
        )
        write_eval(summary, problems, summary_path, self.run_dir.eval_problems(label))
        self.console.event(f"eval_{label}", summary.to_dict())
        return summary

    # --- the whole run ----------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run (or continue) training to ``train.steps``; returns the run summary."""
        config = self.config
        before = self.evaluate("before") if config.train.eval_before else None
        run_started = time.perf_counter()
        self.console.start()
        try:
            while self.step < config.train.steps:
                metrics = self.train_step()
                self.writer.write_step(metrics)
                self.console.step(metrics)
                if config.train.save_every and self.step % config.train.save_every == 0 and self.step < config.train.steps:
                    self.save_checkpoint()
                    self.refresh_report()
        finally:
            self.console.stop()
        train_seconds = time.perf_counter() - run_started
        self.save_checkpoint()
        save_pretrained_atomic(self.run_dir.final, self.policy, self.tokenizer)
        after = self.evaluate("after") if config.train.eval_after else None
        self.writer.close()
        self.refresh_report()
        self.console.detach_log_file()
        summary = {
            "steps": self.step,
            "train_seconds": train_seconds,
            "median_step_s": statistics.median(self.step_times) if self.step_times else float("nan"),
            "out_dir": str(self.run_dir.root),
        }
        if before is not None:
            summary["before"] = before.to_dict()
        if after is not None:
            summary["after"] = after.to_dict()
        self._print_summary(before, after, summary)
        return summary

    def refresh_report(self) -> None:
        """Rewrite report.html (if enabled); a report problem is logged, never stops training."""
        if not self.config.log.report:
            return
        try:
            write_report(self.run_dir.root)
        except Exception as err:  # the report is a view; training must not die for it
            logger.warning("could not write report.html: %s", err)

    def _print_summary(self, before: EvalSummary | None, after: EvalSummary | None, summary: dict[str, Any]) -> None:
        self.console.event("summary", summary)
        labelled = [(label, s) for label, s in (("before", before), ("after", after)) if s is not None]
        if labelled:
            self.console.table(comparison_table([label for label, _ in labelled], [s for _, s in labelled]))
        median = summary["median_step_s"]
        self.console.result(
            f"trained {summary['steps']} steps in {summary['train_seconds']:.1f} s "
            f"(median step {median:.3f} s); run directory: {summary['out_dir']}"
        )
