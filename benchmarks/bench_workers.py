"""One benchmark run in this process: cohort's Trainer or TRL's GRPOTrainer, same settings, timed per step.

Each run is started by ``vs_trl.py`` in a fresh subprocess (so its peak memory is its own and no run
warms another's caches) and writes a JSON result: wall-clock seconds of every training step, the
mean reward and completion tokens of every step, and for cohort its ``time/*`` split. A step's time
is the interval between the ends of consecutive steps (the first step is measured from the start
of training), so everything the training loop does -- sampling, scoring, the update, logging -- is
counted on both sides. Both sides also record every step's completion lengths (cohort: from the
rollout, with which rows it trained; TRL: from the token ids its reward function receives), from
which the FLOPs of variable-length steps are counted exactly.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_processes import current_rss_bytes

SIDES = ("cohort", "trl")

# Mixed precision, the same on both sides: cohort's model.autocast and TRL's bf16 flag (autocast on
# CPU through accelerate); weights and optimiser state stay float32 on both.
PRECISIONS = ("off", "bfloat16")

# The reward both sides score with: the same class, built in each run's process. cohort names it
# in reward.functions (None: the task's default, exact_match); TRL gets an instance.
REWARDS = {
    "exact_match": ("cohort.rewards.builtin:ExactMatch", None),
    "first_line": ("bench_models:FirstLineMatch", "bench_models:FirstLineMatch"),  # the long writer's reward
}


def build_reward(name: str):
    """An instance of the benchmark reward ``name`` (see REWARDS)."""
    from cohort.rewards.registry import import_callable

    return import_callable(REWARDS[name][0])()


@dataclass
class RunSpec:
    """The settings of one run; identical for the two sides except ``side`` (and the seed per repeat)."""

    side: str
    model_path: str
    steps: int
    prompts_per_step: int
    group_size: int
    max_new_tokens: int
    temperature: float
    lr: float
    beta: float
    mu: int
    seed: int
    threads: int
    micro_batch_size: int
    extra_cohort: list[str] = field(default_factory=list)  # extra cohort config overrides
    autocast: str = "off"  # one of PRECISIONS
    device: str = "cpu"  # "cpu" or "cuda" (both sides)
    reward: str = "exact_match"  # one of REWARDS

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {sorted(REWARDS)}, got {self.reward!r}")
        if self.autocast not in PRECISIONS:
            raise ValueError(f"autocast must be one of {PRECISIONS}, got {self.autocast!r}")

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.group_size


def intervals(started: float, ends: list[float]) -> list[float]:
    """Durations of consecutive steps from the start time and each step's end time."""
    return [end - begin for begin, end in zip([started, *ends[:-1]], ends)]


def mean_prompt_tokens(tokenizer, prompts: list[str]) -> float:
    """Average prompt length in tokens, as both trainers encode plain prompts (special tokens added)."""
    return sum(len(ids) for ids in tokenizer(list(prompts))["input_ids"]) / len(prompts)


# --- cohort -------------------------------------------------------------------------------------


def cohort_overrides(spec: RunSpec, out_dir: str) -> list[str]:
    """The cohort config for ``spec``: TRL's defaults (preset trl_parity) and TRL's run settings below."""
    return [
        f"model.path={spec.model_path}",
        f"model.device={spec.device}",
        "model.dtype=float32",
        f"model.autocast={'null' if spec.autocast == 'off' else spec.autocast}",
        "data.task=arithmetic",
        f"rollout.group_size={spec.group_size}",
        f"rollout.prompts_per_step={spec.prompts_per_step}",
        f"rollout.max_new_tokens={spec.max_new_tokens}",
        f"rollout.temperature={spec.temperature}",
        "rollout.top_p=1.0",
        "rollout.top_k=0",
        "algorithm.preset=trl_parity",
        f"algorithm.beta={spec.beta}",
        f"algorithm.mu={spec.mu}",
        f"optim.lr={spec.lr}",
        "optim.schedule=constant",
        "optim.warmup_steps=0",
        "optim.weight_decay=0.0",
        "optim.max_grad_norm=1.0",
        "optim.mini_batches=1",
        f"optim.micro_batch_size={spec.micro_batch_size}",
        f"train.steps={spec.steps}",
        f"train.seed={spec.seed}",
        f"train.threads={spec.threads}",
        f"train.out_dir={out_dir}",
        "train.overwrite=true",
        "train.save_every=0",
        "train.eval_before=false",
        "train.eval_after=false",
        "log.console=quiet",
        "log.completions_every=0",
        "log.tensorboard=false",
        "log.report=false",
        *([f"reward.functions=[{{name: '{REWARDS[spec.reward][1]}'}}]"] if REWARDS[spec.reward][1] else []),
        *spec.extra_cohort,
    ]


def record_shapes(trainer) -> list[dict[str, list]]:
    """From now on, each step's completion lengths and which rows cohort trains on, appended to the
    returned list (the method's signal is wrapped; what it computes is unchanged)."""
    shapes: list[dict[str, list]] = []
    signal = trainer.method.signal

    def recorded(batch, timer):
        result = signal(batch, timer)
        shapes.append({"lengths": batch.rollout.completion_lengths.tolist(), "trained": result.trainable.tolist()})
        return result

    trainer.method.signal = recorded
    return shapes


def run_cohort(spec: RunSpec) -> dict[str, Any]:
    """Train with cohort's Trainer, stepping its loop as ``Trainer.train`` does (minus checkpoints)."""
    import torch

    from cohort.config import load_config
    from cohort.training.trainer import Trainer

    torch.set_num_threads(spec.threads)
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as out_dir:
        setup_started = time.perf_counter()
        trainer = Trainer(load_config(None, cohort_overrides(spec, out_dir)))
        setup_s = time.perf_counter() - setup_started
        prompts = trainer.task.train["prompt"]
        shapes = record_shapes(trainer)
        rss_before = current_rss_bytes()
        records, ends = [], []
        started = time.perf_counter()
        trainer.console.start()
        while trainer.step < spec.steps:
            metrics = trainer.train_step()
            trainer.writer.write_step(metrics)
            trainer.console.step(metrics)
            ends.append(time.perf_counter())
            records.append(metrics)
        trainer.console.stop()
        trainer.writer.close()
        n = spec.completions_per_step
        return {
            "side": "cohort",
            "seed": spec.seed,
            "setup_s": setup_s,
            "rss_before_train": rss_before,
            "prompt_tokens_mean": mean_prompt_tokens(trainer.tokenizer, prompts),
            "step_s": intervals(started, ends),
            "reward": [m["reward/mean"] for m in records],
            "completion_tokens": [m["completion_len/mean"] * n for m in records],
            "trained_frac": [m["trained_frac"] for m in records],
            "frac_reward_zero_std": [m.get("frac_zero_std", float("nan")) for m in records],
            "lengths": [shape["lengths"] for shape in shapes],
            "trained": [shape["trained"] for shape in shapes],
            "split": {
                name: [m[f"time/{name}_s"] for m in records] for name in ("rollout", "reward", "logprob", "train")
            },
            "optimizer": type(trainer.optimizer).__name__ + (" (fused)" if trainer.optimizer.defaults.get("fused") else ""),
        }


# --- TRL ----------------------------------------------------------------------------------------


def checkpointing_off(config_class: type) -> dict[str, bool]:
    """The keyword that turns activation checkpointing off: ``activation_checkpointing`` where the
    training arguments have it (transformers >= 5.24 deprecates ``gradient_checkpointing``), else
    the old name."""
    from dataclasses import fields

    names = {f.name for f in fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": False}


def trl_config(spec: RunSpec, out_dir: str):
    """GRPOConfig mirroring ``spec`` and cohort's trl_parity run: CPU, fp32 weights, no vLLM, one optimizer step per
    generation batch of P*G completions, nothing saved, logging every step."""
    from trl import GRPOConfig

    batch = spec.completions_per_step
    return GRPOConfig(
        output_dir=out_dir,
        use_cpu=spec.device == "cpu",
        bf16=spec.autocast == "bfloat16",
        fp16=False,
        **checkpointing_off(GRPOConfig),  # TRL's default is on; cohort's is off -- compare like with like
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=spec.group_size,
        max_completion_length=spec.max_new_tokens,
        temperature=spec.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=spec.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=spec.beta,
        num_iterations=spec.mu,
        epsilon=0.2,
        loss_type="dapo",  # token mean over the generation batch = cohort's token_mean aggregation
        scale_rewards="group",  # (r - mean) / (sample std + 1e-4) per group = cohort's group_norm, ddof 1
        max_steps=spec.steps * spec.mu,  # TRL counts optimizer steps; each generation batch gives mu of them
        seed=spec.seed,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
    )


class LengthRecorder:
    """A reward function that records the completion lengths (tokens) of every call, then scores with ``reward``."""

    def __init__(self, reward) -> None:
        self.reward = reward
        self.__name__ = reward.__name__
        self.lengths: list[list[int]] = []

    def __call__(self, prompts, completions, **columns):
        self.lengths.append([len(ids) for ids in columns["completion_ids"]])
        return self.reward(prompts, completions, **columns)


def run_trl(spec: RunSpec) -> dict[str, Any]:
    """Train with TRL's GRPOTrainer; the reward is the same reward class cohort scores with (``spec.reward``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    from cohort.data.tasks import load_task

    torch.set_num_threads(spec.threads)
    # TRL itself reads model.is_gradient_checkpointing, deprecated in transformers 5.24: not ours to change.
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning, module="transformers"
    )

    class StepClock(TrainerCallback):
        """End-of-step wall-clock times and the logged metrics of every step."""

        def __init__(self) -> None:
            self.started = 0.0
            self.ends: list[float] = []
            self.logs: list[dict[str, float]] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.logs.append(dict(logs))

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out_dir:
        setup_started = time.perf_counter()
        dataset = load_task("arithmetic", seed=spec.seed).train  # the very rows cohort trains on
        tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(spec.model_path, dtype=torch.float32)
        clock = StepClock()
        reward = LengthRecorder(build_reward(spec.reward))
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[reward],
            args=trl_config(spec, out_dir),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[clock],
        )
        setup_s = time.perf_counter() - setup_started
        rss_before = current_rss_bytes()
        trainer.train()
        optimizer_steps = intervals(clock.started, clock.ends)
        # one cohort step = one generation batch = mu optimizer steps in TRL
        step_s = [sum(optimizer_steps[i : i + spec.mu]) for i in range(0, len(optimizer_steps), spec.mu)]
        # TRL logs every optimizer step; the reward exists only on the steps that generated (or repeats there)
        generation_logs = clock.logs[:: spec.mu] if len(clock.logs) == len(optimizer_steps) else clock.logs
        if len(generation_logs) != len(step_s):
            raise RuntimeError(f"TRL logged {len(generation_logs)} rewards for {len(step_s)} generation batches")
        if len(reward.lengths) != len(step_s):
            raise RuntimeError(f"TRL scored {len(reward.lengths)} generation batches in {len(step_s)} steps")
        n = spec.completions_per_step
        return {
            "side": "trl",
            "seed": spec.seed,
            "setup_s": setup_s,
            "rss_before_train": rss_before,
            "prompt_tokens_mean": mean_prompt_tokens(tokenizer, dataset["prompt"]),
            "step_s": step_s,
            "reward": [log["reward"] for log in generation_logs],
            "completion_tokens": [log["completions/mean_length"] * n for log in generation_logs],
            "frac_reward_zero_std": [log.get("frac_reward_zero_std", float("nan")) for log in generation_logs],
            "lengths": reward.lengths,
        }


def run_worker(spec_path: Path, result_path: Path) -> None:
    """Read a RunSpec (JSON), run it, write the result (JSON)."""
    spec = RunSpec(**json.loads(spec_path.read_text()))
    result = run_cohort(spec) if spec.side == "cohort" else run_trl(spec)
    result["spec"] = asdict(spec)
    if spec.device == "cuda":  # the subprocess's RSS is host memory only; this is the GPU's high-water mark
        import torch

        result["gpu_peak"] = torch.cuda.max_memory_allocated()
    result_path.write_text(json.dumps(result))
