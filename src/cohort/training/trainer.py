"""The one training loop of every method (DeepSeekMath's unified paradigm), readable top to bottom.

Each step: the method's source gives a batch (dataset rows, offline samples of the initial policy,
or online rollouts of the current policy, scored by the rewards); the method turns it into a
training signal (advantages, coefficients, pairs, values); the shared optimisation loop makes
``mu`` passes of mini-batch updates with the method's loss; then metrics. The loop never asks which
method it runs. A reference model exists only when the method needs one, and iterative RL resets it
to the policy every ``ref_reset_every`` steps.
"""

from __future__ import annotations

import logging
import random
import signal
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cohort.assets import resolve_builtin
from cohort.config import Config
from cohort.distributed import (
    Sharding,
    World,
    full_model_state,
    gathered,
    is_sharded,
    load_full_model_state,
    load_optimizer_state,
    optimizer_state,
    released,
    shard,
    start_world,
    wrap,
)
from cohort.methods import MethodContext, TrainingSignal
from cohort.models.loading import (
    autocast_context,
    eos_token_ids,
    load_policy,
    load_reference,
    load_tokenizer,
    resolve_device,
)
from cohort.models.lora import (
    AdapterReference,
    add_adapters,
    is_adapted,
    merged_model,
)
from cohort.models.prompts import task_renderer
from cohort.monitoring.console import FIXED_DATA_KEY_METRICS, RunConsole
from cohort.monitoring.metrics_writer import MetricsWriter
from cohort.optimisation.optimizer import (
    apply_hyperparameters,
    build_optimizer,
    hyperparameters,
)
from cohort.optimisation.update import LoopSettings, Trainable, optimise
from cohort.records import truncate_jsonl
from cohort.rewards.process_model import ProcessRewardModel
from cohort.rewards.registry import construct
from cohort.rollout.engines import build_engine
from cohort.rollout.sampling import SamplingParams
from cohort.run_directory import RunDirectory
from cohort.sources import PolicySampler, ScoringStage, SourcePieces, StepTimer
from cohort.sources.offline import SamplingStopped
from cohort.training.checkpoint import (
    capture_rng_state,
    load_trainer_state,
    prune_checkpoints,
    restore_rng_state,
    save_model,
    save_pretrained_atomic,
)
from cohort.training.evaluation import HeldOutEvaluations, weights_fingerprint
from cohort.training.iterative import IterativeRL
from cohort.training.metrics import BatchFacts, completion_records, step_metrics
from cohort.training.preflight import Preflight, check_settings, preflight
from cohort.training.resume import check_resume, record_segment
from cohort.training.stopping import StopRequests
from cohort.training.watches import RewardFailureWatch, TruncationWatch

logger = logging.getLogger(__name__)

__all__ = ["StepTimer", "Trainer", "seed_everything"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_layers(policy: torch.nn.Module) -> None:
    """Activation checkpointing (model.gradient_checkpointing): each decoder layer's activations are
    recomputed in the backward instead of kept. transformers checkpoints a layer only in training
    mode, and the policy stays in eval mode (no dropout), so the layers themselves, not their
    children, are put in training mode: only the checkpointing reads it. Forwards without gradients
    (the rollout, log-probs) run the layers as they are, KV cache included."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    enable = getattr(policy, "activation_checkpointing_enable", None) or policy.gradient_checkpointing_enable  # 5.x name, 4.x name
    enable()
    for module in policy.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.training = True


class Trainer:
    """Trains ``config.model`` on ``config.data`` with the method ``config.algorithm.method``."""

    def __init__(self, config: Config, console: RunConsole | None = None, checked: Preflight | None = None) -> None:
        """``checked``: the result of :func:`cohort.training.preflight.preflight` for this config, when
        the caller ran it already (the CLI does, to answer a mistake before the heavy imports)."""
        self.config = config
        self.checked = checked
        d = config.distributed
        check_settings(config)  # wrong settings fail before anything is read, started or loaded
        self.world: World = start_world(d.strategy, d.backend, d.timeout_s)
        main = self.world.is_main
        self.console = (console or RunConsole(config.log.console, config.train.steps)) if main else RunConsole("silent", config.train.steps)
        self.run_dir = RunDirectory(Path(config.train.out_dir))
        self._prepare_run_directory()
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        seed_everything(config.train.seed)
        self.device = resolve_device(config.model.device if not (self.world.distributed and torch.cuda.is_available())
                                     else f"cuda:{self.world.local_rank}")
        self.generator = torch.Generator(device=self.device).manual_seed(config.train.seed)
        self._load_task_and_rewards()  # cheap checks first: data and rewards fail before any model is loaded
        self._load_models()
        self._build_method()
        self.step = 0
        if self.resume_from is not None:
            self._restore(self.resume_from)
        if main:
            record_segment(self.run_dir, config, self.step)
        if self.method_class.samples != "online":  # a batch of fixed data: its reward says nothing of the policy
            self.console.key_metrics = FIXED_DATA_KEY_METRICS
        self.evaluations = HeldOutEvaluations(
            config=config, task=self.task, run_dir=self.run_dir, world=self.world, console=self.console, policy=self.policy,
            tokenizer=self.tokenizer, scoring=lambda: self.pieces.scoring, gathered=self.gathered, engine=self.engine,
        )
        self.writer = MetricsWriter(self.run_dir, config, start_step=self.step) if main else None
        self.step_times: list[float] = []
        self.truncation = TruncationWatch(logger.warning, config.rollout.max_new_tokens)
        self.reward_failures = RewardFailureWatch(config.reward.max_failed_steps)

    def _prepare_run_directory(self) -> None:
        """Rank 0 checks and prepares the run directory; every rank learns the checkpoint to resume from."""
        train = self.config.train
        resume_from = None
        if self.world.is_main:
            resume_from = self.run_dir.prepare(resume=train.resume, overwrite=train.overwrite, info=self.console.info)
            self.console.attach_log_file(self.run_dir.log)
            if resume_from is not None:
                changes = check_resume(self.run_dir, self.config, step=int(resume_from.name.split("-")[1]))
                for key, old, new in changes:
                    self.console.info(f"resume: {key} {old!r} -> {new!r} (train.accept_changes=true)")
        self.resume_from = self.world.broadcast(resume_from)

    # --- building the run ---------------------------------------------------------------------------

    def _load_task_and_rewards(self) -> None:
        """The checks that need no weights (training.preflight): data and rewards fail before any model loads."""
        checked = self.checked or preflight(self.config, resume_from=self.resume_from, distributed=self.world.distributed)
        self.method_class, self.model_path, self.task = checked.method_class, checked.model_path, checked.task
        config = self.config
        self.scoring = ScoringStage(rewards=checked.rewards, timeout_s=config.reward.timeout_s, strict=config.reward.strict)
        for reward in checked.rewards:
            if hasattr(reward.fn, "isolation"):
                self.console.info(f"reward {reward.name!r}: programs run in a sandbox with {reward.fn.isolation}")

    def _load_models(self) -> None:
        config = self.config
        self.console.info(f"loading model {config.model.path} ...")
        self.tokenizer = load_tokenizer(self.model_path, trust_remote_code=config.model.trust_remote_code)
        self.renderer = task_renderer(self.tokenizer, self.task, template=config.data.prompt_template,
                                      chat=config.model.chat_template, system_prompt=config.model.system_prompt)
        if config.reward.process_model:
            options = dict(config.reward.process_model)
            prm_path = options.pop("path")
            prm = construct("process_model", lambda **kw: ProcessRewardModel(prm_path, self.tokenizer, **kw), options)
            self.scoring = self.scoring.replaced(process_model=prm)
        model = config.model
        loading = {"dtype": model.dtype, "device": self.device, "trust_remote_code": model.trust_remote_code}
        if model.lora is not None:  # the base from model.path, the adapters new or from the checkpoint
            self.policy = add_adapters(load_policy(self.model_path, **loading), model.lora, self.resume_from)
        else:
            self.policy = load_policy(self.resume_from or self.model_path, **loading)  # a resumed run continues from its weights
        if model.gradient_checkpointing:
            checkpoint_layers(self.policy)
        self.reference = None
        if self.method_class.needs_reference(config):
            self.reference = AdapterReference(self.policy) if model.lora is not None and not model.reference_path else load_reference(
                resolve_builtin(model.reference_path) if model.reference_path else self.model_path, **loading)
        self.reference_was_reset = False
        eos_ids = eos_token_ids(self.tokenizer, getattr(self.policy, "generation_config", None))
        self.sampling = SamplingParams.for_run(config.rollout, eos_ids)

    def _optimizer_for(self, module: torch.nn.Module, lr: float):
        o = self.config.optim
        return build_optimizer(
            module.parameters(), lr=lr, betas=o.betas, weight_decay=o.weight_decay, eps=o.adam_eps, schedule=o.schedule,
            total_steps=self.config.train.steps, warmup_steps=o.warmup_steps, min_ratio=o.min_lr_ratio,
        )

    def _build_method(self) -> None:
        config, world = self.config, self.world
        d = config.distributed
        sharding = Sharding(mixed_precision=d.mixed_precision, cpu_offload=d.cpu_offload)
        self.policy_forward = wrap(world, self.policy, sharding)  # FSDP2 shards the policy in place; DDP wraps it
        if world.distributed and world.strategy == "fsdp2" and self.reference is not None and not isinstance(self.reference, AdapterReference):
            shard(world, self.reference, sharding)  # frozen, sharded like the policy: gathered per layer in its forwards
        self.optimizer, self.scheduler = self._optimizer_for(self.policy, config.optim.lr)
        context = MethodContext(
            config=config, device=self.device, policy=self.policy, reference=self.reference, tokenizer=self.tokenizer,
            autocast=self.autocast, model_path=self.model_path, build_optimizer=self._optimizer_for,
            wrap=lambda module: wrap(world, module, sharding), resume_from=self.resume_from, world=world,
        )
        self.method = self.method_class(context)
        forward = self.policy_forward if self.policy_forward is not self.policy else None
        policy = Trainable("policy", self.policy, self.optimizer, self.scheduler, config.optim.max_grad_norm, forward)
        self.trainables = [policy, *self.method.trainables()]
        self.engine = build_engine(config.rollout, self.model_path, dtype=next(self.policy.parameters()).dtype, device=self.device,
                                   trust_remote_code=config.model.trust_remote_code)
        sampler = PolicySampler(policy=self.policy, tokenizer=self.tokenizer, renderer=self.renderer, params=self.sampling,
                                generator=self.generator, autocast=self.autocast, engine=self.engine)
        self.pieces = SourcePieces(config=config, task=self.task, sampler=sampler, scoring=self.scoring, run_dir=self.run_dir,
                                   info=self.console.info, world=world, progress=self.console.progress)
        self.source = self.method.source(self.pieces)
        self.iterative = IterativeRL(self.pieces, reset_reference=self.reset_reference, gathered=self.gathered,
                                     base_model=self.model_path, device=self.device) if config.iterative.iterations else None
        o = config.optim
        self.loop = LoopSettings(passes=config.algorithm.mu, mini_batches=o.mini_batches, micro_batch_size=o.micro_batch_size,
                                 autocast=self.autocast, micro_batch_tokens=o.micro_batch_tokens, world=world)

    def gathered(self):
        """FSDP2: the policy's full parameters for the enclosed generation (rollout, evaluation: no
        collective in the decode loop); freed on exit. A no-op otherwise."""
        return gathered([self.policy])

    def _sharded_models(self) -> list[torch.nn.Module]:
        models = [t.module for t in self.trainables]
        return models + [self.reference] if self.reference is not None and is_sharded(self.reference) else models

    def reset_reference(self) -> None:
        """pi_ref <- pi_theta (iterative RL): the reference becomes a copy of the current policy."""
        if isinstance(self.reference, AdapterReference):
            self.reference.reset_to_policy()
            self.reference_was_reset = True
        elif self.reference is not None:
            load_full_model_state(self.reference, full_model_state(self.world, self.policy, everywhere=True))
            self.reference_was_reset = True
            self.console.info(f"step {self.step}: reference model reset to the current policy")

    def autocast(self):
        """The configured model.autocast precision for a forward (a no-op when unset)."""
        return autocast_context(self.device, self.config.model.autocast)

    # --- one training step --------------------------------------------------------------------------

    def train_step(self) -> dict[str, Any]:
        """One step: (reference reset), a batch from the source, the method's signal, the update, metrics."""
        timer = StepTimer()
        self._reset_reference_if_due()
        lr = self.optimizer.param_groups[0]["lr"]
        for trainable in self.trainables:  # the last step's gradients are not kept through the rollout
            trainable.optimizer.zero_grad(set_to_none=True)
        with self.gathered():  # FSDP2: full weights for the rollout only
            batch = self.source.next_batch(timer)
        self.engine.sleep()  # vLLM on a GPU: its memory goes to the update
        with released(self._sharded_models()):  # FSDP2: the no-grad forwards gather each unit in turn
            signal = self.method.signal(batch, timer)
        started = time.perf_counter()
        stats = optimise(self.method, signal, batch.rollout, signal.loss_mask, signal.trainable, self.trainables, self.loop)
        timer.train += time.perf_counter() - started
        with warnings.catch_warnings():  # a step with no trainable sample makes no optimizer step; that is fine
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            for trainable in self.trainables:
                trainable.scheduler.step()
        self.step += 1
        metrics = self._metrics(batch, signal, stats, timer, lr)
        if self.iterative is not None:
            metrics.update(self.iterative.after_step(self.step))
        if self.writer is not None and self.config.log.completions_every and self.step % self.config.log.completions_every == 0:
            self.writer.write_completions(completion_records(self.step, batch, signal.per_sample, self.config.log.completions_per_step))
        return metrics

    def _reset_reference_if_due(self) -> None:
        every = self.config.algorithm.ref_reset_every
        applies = self.method_class.reads_key("algorithm.ref_reset_every")
        if self.reference is not None and applies and every and self.step > 0 and self.step % every == 0:
            self.reset_reference()

    # --- metrics ------------------------------------------------------------------------------------

    def _metrics(self, batch, signal: TrainingSignal, stats: dict[str, float], timer: StepTimer, lr: float) -> dict[str, Any]:
        step_time = time.perf_counter() - timer.started
        self.step_times.append(step_time)
        times = {"rollout": timer.rollout, "reward": timer.reward, "logprob": timer.logprob, "train": timer.train, "step": step_time}
        method_metrics = {**signal.metrics, **self.method.metrics(batch, signal, stats)}
        facts = BatchFacts.gather(self.world, BatchFacts.of(batch, signal.trainable))
        metrics = step_metrics(self.world, self.step, facts, method_metrics, stats, times, lr)
        self.truncation.observe(self.step, metrics["truncated_frac"])
        self.reward_failures.observe(self.step, facts)
        return metrics

    # --- checkpoints --------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write checkpoints/step-N atomically (rank 0 writes; under FSDP2 every rank gathers its shards)."""
        world = self.world
        destination = self.run_dir.checkpoints / f"step-{self.step}"
        trainables = {
            t.name: {"optimizer": optimizer_state(world, t.module, t.optimizer), "scheduler": t.scheduler.state_dict()}
            for t in self.trainables
        }
        weights = None if is_adapted(self.policy) else full_model_state(world, self.policy)  # PEFT saves the adapters
        extra_models = {name: (model, full_model_state(world, model)) for name, model in self.method.models().items()}
        reference = None
        if self.reference is not None and self.reference_was_reset:  # a sharded reference: every rank gathers
            reference = full_model_state(world, self.reference) if is_sharded(self.reference) else {
                k: v.detach().cpu().clone() for k, v in self.reference.state_dict().items()}
        if world.is_main:
            state = {
                "step": self.step,
                "trainables": trainables,
                "source": self.source.state_dict(),
                "rng": capture_rng_state(self.generator),
                "reference_was_reset": self.reference_was_reset,
            }
            if reference is not None:
                state["reference"] = reference
            if self.iterative is not None:
                state["iterative"] = self.iterative.state_dict()

            def write_method_models(directory: Path) -> None:
                for name, (model, model_weights) in extra_models.items():
                    save_model(model, directory / name, model_weights)

            save_pretrained_atomic(destination, self.policy, self.tokenizer, extra=state, write_more=write_method_models, state_dict=weights)
            prune_checkpoints(self.run_dir, self.config.train.keep_checkpoints)
        world.barrier()
        return destination

    def _restore(self, checkpoint: Path) -> None:
        """Continue from a checkpoint (the models were loaded from it already): optimizers, schedules,
        data position, random states. Works under another world size or strategy."""
        state = load_trainer_state(checkpoint)
        for trainable in self.trainables:
            saved, built = state["trainables"][trainable.name], hyperparameters(trainable.optimizer, trainable.scheduler)
            load_optimizer_state(trainable.module, trainable.optimizer, saved["optimizer"])
            trainable.scheduler.load_state_dict(saved["scheduler"])
            if self.config.train.accept_changes:  # the new settings apply from here (the moments stay)
                apply_hyperparameters(trainable.optimizer, trainable.scheduler, built)
        self.source.load_state_dict(state["source"])
        restore_rng_state(state["rng"], self.generator)
        self.reference_was_reset = state["reference_was_reset"]
        if self.reference is not None and "reference" in state:
            load_full_model_state(self.reference, state["reference"])
        self.step = state["step"]
        if self.iterative is not None:
            self.iterative.load_state_dict(state["iterative"])
        if self.world.is_main:
            truncate_jsonl(self.run_dir.metrics, self.step)
            truncate_jsonl(self.run_dir.completions, self.step)
            truncate_jsonl(self.run_dir.eval_curve, self.step)
        self.console.info(f"resumed from {checkpoint} at step {self.step}")

    def save_final(self) -> None:
        """final/: the HF model and tokenizer, loadable by AutoModelForCausalLM."""
        weights = None if is_adapted(self.policy) else full_model_state(self.world, self.policy)
        if self.world.is_main:
            save_pretrained_atomic(self.run_dir.final, self.policy, self.tokenizer, state_dict=weights)
            if self.config.model.lora is not None and self.config.model.export_merged:
                save_pretrained_atomic(self.run_dir.final / "merged", merged_model(self.policy), self.tokenizer)
        self.world.barrier()

    # --- the whole run ------------------------------------------------------------------------------

    def _run_steps(self, stop: StopRequests) -> float:
        """Steps until train.steps or a stop request (on any rank); returns the seconds spent."""
        config = self.config
        started = time.perf_counter()
        self.console.start()
        try:
            while self.step < config.train.steps and not self._stopping(stop):
                metrics = self.train_step()
                if self.writer is not None:
                    self.writer.write_step(metrics)
                self.console.step(metrics)
                self.reward_failures.check()  # every rank raises at the same step: the facts are global
                if config.train.eval_every and self.step % config.train.eval_every == 0:
                    self.evaluations.curve_point(self.step)
                due = config.train.save_every and self.step % config.train.save_every == 0
                boundary = self.iterative is not None and self.iterative.boundary(self.step)  # the new RM is in the state
                if (due or boundary) and self.step < config.train.steps:
                    self.save_checkpoint()
                    self.refresh_report()
        finally:
            self.console.stop()
        return time.perf_counter() - started

    def _stopping(self, stop: StopRequests) -> bool:
        """Whether any rank was asked to stop (all ranks stop after the same step)."""
        return self.world.sum(int(stop.requested)) > 0 if self.world.distributed else stop.requested

    def train(self) -> dict[str, Any]:
        """Run (or continue) training to ``train.steps``; returns the run summary.

        A SIGINT or SIGTERM finishes the current step, checkpoints it and returns early with
        ``summary["stopped_by"]`` set (no final evaluation); a second one stops at once.
        """
        train, start = self.config.train, self.step
        with StopRequests(self.console.info) as stop:
            self.evaluations.announce()
            self.pieces.stop_requested = lambda: stop.requested
            try:
                with self.gathered():
                    self.source.prepare()
            except SamplingStopped as stopped_early:
                return self._stopped_before_training(str(stopped_early), stop)
            if self.iterative is not None:
                self.iterative.prepare()
            initial = {"step": 0, "model": self.config.model.path}
            before = self.evaluations.summary("before", initial) if train.eval_before and not stop.requested else None
            train_seconds = self._run_steps(stop)
            stopped = self._stopping(stop)
            self.save_checkpoint()
            after = None
            if not stopped:
                self.save_final()
                after = self.evaluations.summary("after", self._final_checkpoint()) if train.eval_after else None
            if self.writer is not None:
                self.writer.close()
            self.refresh_report()
            self.console.detach_log_file()
        summary = {
            "steps": self.step,
            "steps_this_run": self.step - start,
            "train_seconds": train_seconds,
            "steps_seconds": sum(self.step_times),
            "median_step_s": statistics.median(self.step_times) if self.step_times else float("nan"),
            "out_dir": str(self.run_dir.root),
        }
        if stopped:
            summary["stopped_by"] = stop.signal_number or signal.SIGTERM
        for label, result in (("before", before), ("after", after)):
            if result is not None:
                summary[label] = result.to_dict()
        self.console.summary(summary, before, after)
        return summary

    def _stopped_before_training(self, message: str, stop: StopRequests) -> dict[str, Any]:
        """A stop while the source prepared (offline sampling): no step ran, nothing else is written."""
        self.console.info(message)
        if self.writer is not None:
            self.writer.close()
        self.console.detach_log_file()
        return {"steps": self.step, "steps_this_run": 0, "stopped_by": stop.signal_number or signal.SIGTERM,
                "out_dir": str(self.run_dir.root)}

    def _final_checkpoint(self) -> dict[str, Any]:
        """What the after-training evaluation measures: this step's final/ weights (rank 0's fingerprint)."""
        fingerprint = weights_fingerprint(self.run_dir.final) if self.world.is_main else None
        return {"step": self.step, "weights_sha256": self.world.broadcast(fingerprint)}

    def refresh_report(self) -> None:
        """Rewrite report.html (if enabled; rank 0); a report problem is logged, never stops training."""
        if not self.config.log.report or not self.world.is_main:
            return
        from cohort.report import write_report  # here: a run without a report skips matplotlib (~0.3 s)

        try:
            write_report(self.run_dir.root)
        except Exception as err:  # the report is a view; training must not die for it
            logger.warning("could not write report.html: %s", err)
