"""The run configuration's typed sections, and the registry through which methods add their own.

A config is a set of sections (``model``, ``data``, ``reward``, ...), each a dataclass whose fields
are documented where they are declared (``cohort config`` and docs/config.md print them). The core
sections below belong to the loop every method shares; a method's own settings live in a section
its file declares and registers with :func:`register_section` (e.g. ``dpo``, ``ppo``). This module
imports nothing from the rest of cohort.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

PLUGIN_PACKAGES = ("cohort.methods",)
"""Packages whose modules register sections when imported; imported before a config is built, so a
method's section is known however the config is loaded (the CLI, the trainer, a user's script)."""


class ConfigError(ValueError):
    """A configuration key or value is not allowed; the message says which and what is."""


@dataclass
class ModelConfig:
    path: str = ""
    """Local directory of a Hugging Face causal LM (or a hub id where the machine has network)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype. Log-probs are always computed in float32."""
    device: str = "auto"
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    reference_path: str | None = None
    """Reference model for the KL term; defaults to ``path``. Loaded only when beta > 0."""
    chat_template: bool = False
    """Render prompts with the tokenizer's chat template (prompt becomes a user message)."""
    system_prompt: str | None = None
    """System message prepended when ``chat_template`` is on."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, more compute."""
    autocast: Literal["bfloat16", "float16"] | None = None
    """Run the model's forwards (rollout, training, evaluation) under torch.autocast in this precision:
    matmuls in bf16/fp16, softmax and log-probs in float32, weights and optimiser state stay in
    ``dtype``. Much faster on CPUs with bf16 matrix units (avx512_bf16, AMX) and on GPUs; the rounding
    noise means the ratio at the first update is close to, not exactly, 1."""
    trust_remote_code: bool = False
    """Allow model code shipped inside the model directory (Hugging Face ``trust_remote_code``)."""
    lora: dict[str, Any] | None = None
    """Train LoRA adapters (PEFT) instead of every weight: ``{r, alpha, dropout, target_modules, ...}`` (any peft.LoraConfig field); null = full fine-tuning. The reference is the base with the adapters off."""
    export_merged: bool = False
    """LoRA: also write final/merged/, the adapters merged into a plain HF model (``cohort export`` does it later)."""


@dataclass
class DataConfig:
    task: str = "arithmetic"
    """A built-in task name, or a path to a local JSONL / parquet file with prompt and answer columns."""
    test_path: str | None = None
    """Held-out file for a file task (same columns)."""
    test_fraction: float = 0.0
    """Or: hold out this fraction of the file task's rows (seeded, disjoint)."""
    format: Literal["plain", "gsm8k", "math"] = "plain"
    """How a file task's rows are read: plain (prompt and answer columns), gsm8k (question + worked
    answer ending in '#### <answer>'), math (problem + solution whose last \\boxed{} is the answer)."""
    question_column: str | None = None
    """Formats gsm8k / math: the column holding the question (default: question / problem)."""
    solution_column: str | None = None
    """Formats gsm8k / math: the column holding the worked solution (default: answer / solution)."""
    prompt_column: str = "prompt"
    """Column holding the prompt (a string, or a list of chat messages)."""
    answer_column: str = "answer"
    """Column holding the reference answer (what exact_match / math compare against)."""
    prompt_template: str = "{prompt}"
    """Python format string applied to each row's columns to build the prompt text."""
    shuffle: bool = True
    """Draw training prompts in a fresh seeded order each epoch (else in file order)."""
    eval_limit: int | None = None
    """Evaluate on at most this many held-out problems (None: all of them)."""


@dataclass
class RewardConfig:
    functions: list[dict[str, Any]] = field(default_factory=list)
    """Reward functions ``{name, weight, alias, ...options}``; empty: the task's default rewards.
    A name is a built-in (docs/rewards.md) or ``module:callable``; ``alias`` renames it in the logs."""
    timeout_s: float = 60.0
    """A reward call that runs longer gives None for its samples (never kills the run)."""
    strict: bool = False
    """Raise instead of scoring None when a reward function fails."""
    max_failed_steps: int = 3
    """Stop the run (one line naming each reward and its first error) after this many consecutive steps in which no sample could be scored: such steps train nothing. 0 = never stop."""
    backend: Literal["local", "ray"] = "local"
    """Where reward.functions run: in this process (local) or on Ray actors (ray), each function built once per worker."""
    ray_address: str | None = None
    """backend ray: the cluster to join ('auto': one started with `ray start`, or host:port); null = start a local one."""
    ray_workers: int = 2
    """backend ray: actors per reward function; a batch is split into chunks among them."""
    ray_chunk_size: int = 16
    """backend ray: completions per remote call."""
    process_model: dict[str, Any] | None = None
    """Process reward model for ``algorithm.advantage: process``: ``{path, step_marker, separator,
    batch_size, device, dtype, label}`` (a local HF token-classification model; its step scores are
    probabilities). ``{path: gold}``: the task's gold step checker instead (the multi-step task's)."""
    min_within_group_auc: float | None = None
    """Quality gate (GRPO): stop before training when a learned reward model (reward.process_model, or a reward_model reward) records a held-out within-group AUC in its training.json below this, or records none; null = no gate. cohort train-rm measures it."""


ROLLOUT_ENGINES = ("native", "vllm")
"""rollout.engine's values (cohort.rollout.engines builds them)."""


@dataclass
class RolloutConfig:
    group_size: int = 8
    """G: completions sampled per prompt."""
    prompts_per_step: int = 8
    """P: prompts per training step (the rollout batch holds P x G completions)."""
    max_new_tokens: int = 256
    """Generation budget per completion (also Dr. GRPO's constant L_max)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs for the loss use the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1 = off)."""
    top_k: int = 0
    """Sample among the k most likely tokens (0 = off)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings, in addition to the tokenizer's EOS ids."""
    engine: str = "native"
    """Who generates: native (cohort's decode loop on the policy itself) or vllm (vLLM in this process, ``make vllm``; its weights follow the policy after every update)."""
    vllm_memory_fraction: float = 0.3
    """rollout.engine=vllm: the share of the device's memory vLLM may take (GPU: weights and KV cache, vLLM's gpu_memory_utilization; CPU: the KV cache, as a share of RAM)."""
    vllm_sleep: bool = True
    """rollout.engine=vllm on a GPU: the engine sleeps (KV cache and its weights released) during the update and wakes for the next rollout; vLLM cannot sleep on CPU."""


@dataclass
class AlgorithmConfig:
    method: str = "grpo"
    """The training method (DeepSeekMath's unified paradigm); ``cohort methods`` lists them."""
    preset: str = "grpo"
    """A named bundle of the knobs below (docs/spec.md §8.5, ``cohort presets``); explicit keys override it."""
    advantage: str = "group_norm"
    """group_norm (GRPO), group_center (Dr. GRPO), batch_norm (group mean, batch std), rloo, reinforce (no baseline), or process (PRM steps)."""
    std_ddof: int = 1
    """Std of the group rewards: 1 = sample std (TRL, verl), 0 = population std."""
    adv_eps: float = 1e-4
    """Added to the std (outside the square root) before dividing."""
    aggregation: str = "seq_mean_token_mean"
    """Token aggregation: seq_mean_token_mean (GRPO), token_mean (DAPO), seq_mean_token_sum, seq_sum_const (Dr. GRPO), decoupled (DeGRPO)."""
    policy_loss: str = "clip"
    """The surrogate: clip (per-token clipped ratio, PPO/GRPO), sequence_clip (GSPO's sequence ratio), dual_clip."""
    eps_low: float = 0.2
    """Lower clip range: the ratio is clipped at 1 - eps_low."""
    eps_high: float = 0.2
    """Upper clip range: the ratio is clipped at 1 + eps_high (DAPO clip-higher: 0.28)."""
    dual_clip: float | None = None
    """policy_loss=dual_clip: the bound (> 1) on the loss of negative-advantage tokens."""
    beta: float = 0.04
    """KL coefficient against the reference model (in the loss, or in the reward for methods that put it there); 0 = no reference model is loaded."""
    kl_estimator: str = "k3"
    """The KL estimator in the loss: k1, k2 or k3 (DeepSeekMath's unbiased, non-negative estimator)."""
    kl_clamp: float | None = 10.0
    """Cap on each token's KL estimate in the loss, as verl and OpenRLHF cap at 10 (docs/spec.md §10.13): a clamp, so a token beyond ±kl_clamp adds the cap and no KL gradient; null = no cap. k3 reaches 10 only where pi_theta gives a token 13.6x less probability than pi_ref, or 59,873x more."""
    tis_cap: float | None = None
    """rollout.engine=vllm: truncated importance sampling for the engine/trainer mismatch: each token's policy loss is weighted by min(pi_trainer / pi_engine, tis_cap) (verl's TIS, TRL's token_truncate); null = off."""
    control_weight: float = 1.0
    """Weight alpha of the first (control) token in the decoupled aggregation."""
    mu: int = 1
    """Optimisation passes over each rollout batch (GRPO's iterations mu, PPO's epochs)."""
    ref_reset_every: int = 0
    """Reset the reference to the current policy every N steps (iterative GRPO); 0 = never."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and sample more prompts to refill the batch."""
    dynamic_sampling_max_rounds: int = 4
    """Most sampling rounds per step when refilling the batch with informative groups."""
    overlong_filter: bool = False
    """DAPO: truncated completions keep their reward in the group statistics but get no loss."""
    overlong_buffer: float = 0.0
    """DAPO soft overlong punishment: the last fraction of max_new_tokens is penalised linearly; 0 = off."""
    process_credit: str = "sum"
    """advantage=process: how step rewards become token credit (docs/spec.md §4.1): sum (DeepSeekMath: the normalised rewards of the steps still to come, added up) or min (PURE: the smallest of them)."""
    process_outcome_weight: float = 0.0
    """advantage=process: mix in outcome supervision: add this weight x the group-normalised outcome advantage of the reward functions' total (e.g. the task's rule) to every token (docs/spec.md §4.2); 0 = process reward only."""


@dataclass
class OfflineConfig:
    samples_per_prompt: int = 8
    """Offline sources: completions drawn once per training prompt from the initial policy."""
    max_prompts: int | None = None
    """Draw for at most this many training prompts (a seeded choice); null = all of them."""


@dataclass
class OptimConfig:
    lr: float = 1e-6
    """Peak learning rate of AdamW."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's beta1, beta2."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    adam_eps: float = 1e-8
    """AdamW's epsilon."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm; 0 = off."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate schedule over train.steps (after the warm-up)."""
    warmup_steps: int = 0
    """Steps of linear warm-up."""
    min_lr_ratio: float = 0.0
    """Final lr of the cosine / linear schedule as a fraction of ``lr``."""
    mini_batches: int = 1
    """Optimizer steps per pass over a rollout batch (it is split into this many mini-batches)."""
    micro_batch_size: int = 64
    """Completions per forward/backward at most; gradients accumulate up to the mini-batch."""
    micro_batch_tokens: int = 4096
    """Padded tokens per forward/backward at most (rows x widest prompt+completion; rows are sorted by length, so long completions go in small micro-batches and short ones in large): bounds activation memory and padding waste. 0 = rows only. 4096 measured fastest on CPU (the 5.6 M long writer, 32 rows up to 512 tokens: 3.9 s per forward+backward against 10.5 s unbounded); raise it on large GPUs."""


@dataclass
class TrainConfig:
    steps: int = 100
    """Training steps (each: P x G samples, then mu passes of updates)."""
    batch_size: int | None = None
    """Dataset and offline sources: examples per step (rows; for pair methods, pairs); null = rollout.prompts_per_step x rollout.group_size sequences (pairs: half as many)."""
    seed: int = 0
    """Seeds data order, sampling and initial RNG state: same seed, same machine, same run."""
    out_dir: str = "runs/cohort"
    """The run directory (config.yaml, metrics.jsonl, checkpoints/, final/, report.html, ...)."""
    resume: bool = False
    """Continue from the latest checkpoint in out_dir."""
    accept_changes: bool = False
    """With resume: continue even though settings other than the run's length, evaluation and logging changed (they apply from the resumed step; configs/step-N.yaml records each segment's config). Without it such a resume is refused, listing the changes."""
    overwrite: bool = False
    """Allow starting afresh in an out_dir that already holds a run: its files are deleted (the run says which)."""
    save_every: int = 50
    """Checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """Keep only the newest N checkpoints."""
    eval_before: bool = True
    """Evaluate on the held-out split before training (eval_before.json)."""
    eval_after: bool = True
    """Evaluate on the held-out split after training (eval_after.json)."""
    eval_samples: int = 4
    """Samples per held-out problem for sampled pass@1 (greedy accuracy is measured too)."""
    eval_every: int = 0
    """Also evaluate on the held-out split every N steps (eval_curve.jsonl: held-out accuracy against training step); 0 = never."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""


@dataclass
class IterativeConfig:
    iterations: int = 0
    """DeepSeekMath Algorithm 1: outer iterations; 0 = off. Each resets the reference to the policy, trains steps_per_iteration steps with the current reward model, then continues training the reward model on fresh policy samples plus a replay share."""
    steps_per_iteration: int = 0
    """Policy steps per iteration (train.steps = iterations x steps_per_iteration)."""
    supervision: Literal["outcome", "process"] = "process"
    """outcome: a sequence-classification reward model scores whole completions; process: a PRM scores each step (needs algorithm.advantage=process)."""
    reward_model: str | None = None
    """The reward model of the first iteration; null = train one first on labelled samples of the initial policy."""
    base_model: str | None = None
    """Where a new reward model's backbone comes from; null = the policy's model.path."""
    rm_samples: int = 256
    """Completions of the current policy labelled per iteration (rm_samples / group_size prompts x rollout.group_size)."""
    replay_fraction: float = 0.1
    """Share of each iteration's reward-model training mixture drawn from earlier iterations' data (the paper's 10%)."""
    labels: Literal["monte_carlo", "gold", "rule"] = "monte_carlo"
    """How training labels are made: rule (outcome: the task's correctness rule), monte_carlo (process: Math-Shepherd completions from each step prefix) or gold (process: the task's exact step checker, for comparison)."""
    mc_rollouts: int = 4
    """monte_carlo: completions sampled from each step prefix (N)."""
    mc_label: Literal["hard", "soft"] = "hard"
    """monte_carlo: a step is good if any completion is right (hard) or by the fraction that are (soft)."""
    rm_epochs: int = 2
    """Epochs of reward-model training per iteration."""
    rm_lr: float = 1e-3
    """Learning rate of reward-model training."""
    rm_batch_size: int = 32
    """Examples per reward-model optimizer step."""
    rm_held_out: float = 0.1
    """Share of each iteration's fresh data held out to measure the reward model (within-group AUC, accuracy, AUC); whole prompts are held out."""
    rm_patience: int | None = None
    """Early stopping of reward-model training: stop after this many epochs without a better held-out within-group AUC and keep the best epoch; null = run rm_epochs epochs."""


@dataclass
class DistributedConfig:
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    """Under torchrun (more than one rank): DDP (each rank holds the whole model) or FSDP2 (parameters, gradients and optimizer state sharded at rest). Ignored in one process."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend: auto = NCCL with CUDA, else gloo."""
    timeout_s: float = 1800.0
    """How long a rank waits for the others at a collective before the run fails."""
    mixed_precision: Literal["none", "bf16"] = "none"
    """FSDP2 only. bf16: the gathered parameters (generation, forwards, backwards) are bf16 copies of the fp32 shards, gradients are reduce-scattered in fp32 and the optimizer steps on fp32 shards (MixedPrecisionPolicy). none: everything in model.dtype, the gradient equals one process's."""
    cpu_offload: bool = False
    """FSDP2 on CUDA only: keep the parameter shards, gradients and optimizer state in host memory and step on the CPU (CPUOffloadPolicy); each unit is copied to the GPU for its forward and backward. Not available on CPU runs (their shards are in host memory already)."""


@dataclass
class LogConfig:
    console: Literal["rich", "plain", "json", "quiet"] = "rich"
    """rich: live progress bar; plain: one line per step; json: one JSON object per step; quiet: summary only."""
    completions_every: int = 10
    """Write sampled completions to completions.jsonl every N steps (0 = never)."""
    completions_per_step: int = 16
    """How many of a step's completions are written when it writes any."""
    tensorboard: bool = True
    """Write TensorBoard event files into the run directory (the same as listing tensorboard in trackers)."""
    trackers: list[str] = field(default_factory=list)
    """More experiment trackers to send the same metrics to: any of wandb (offline unless WANDB_MODE says otherwise), mlflow (MLFLOW_TRACKING_URI, default a file store in the run directory), trackio (local)."""
    run_name: str | None = None
    """The run's name in the trackers; null = the run directory's name."""
    report: bool = True
    """Write report.html at checkpoints and at the end."""


CORE_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "reward": RewardConfig,
    "rollout": RolloutConfig,
    "algorithm": AlgorithmConfig,
    "offline": OfflineConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "iterative": IterativeConfig,
    "distributed": DistributedConfig,
    "log": LogConfig,
}
_REGISTERED: dict[str, type] = {}


def register_section(name: str, cls: type) -> type:
    """Add the dataclass ``cls`` as config section ``name`` (a method's own settings). A section may
    define ``check(self)``, raising ConfigError for values out of range; it runs on every build."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"config section {name!r} must be a dataclass, got {cls!r}")
    if name in CORE_SECTIONS or _REGISTERED.get(name, cls) is not cls:
        raise ValueError(f"config section {name!r} is already registered")
    _REGISTERED[name] = cls
    return cls


def section_classes() -> dict[str, type]:
    """Every section by name: the core ones, then those the plugin packages register."""
    for package in PLUGIN_PACKAGES:
        importlib.import_module(package)
    return {**CORE_SECTIONS, **_REGISTERED}


def field_types() -> dict[str, Any]:
    """Every dotted key (``section.field``) with its resolved annotation."""
    types_by_key = {}
    for section, cls in section_classes().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            types_by_key[f"{section}.{f.name}"] = hints[f.name]
    return types_by_key


def default_value(key: str) -> Any:
    """The default of a dotted key."""
    section, name = key.split(".", 1)
    return getattr(section_classes()[section](), name)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class Config:
    """A resolved run configuration: one attribute per section (``config.rollout.group_size``)."""

    model: ModelConfig
    data: DataConfig
    reward: RewardConfig
    rollout: RolloutConfig
    algorithm: AlgorithmConfig
    offline: OfflineConfig
    optim: OptimConfig
    train: TrainConfig
    iterative: IterativeConfig
    distributed: DistributedConfig
    log: LogConfig

    def __init__(self, **sections: Any) -> None:
        classes = section_classes()
        unknown = sorted(set(sections) - set(classes))
        if unknown:
            raise ConfigError(f"unknown config section {unknown[0]!r} (sections: {', '.join(classes)})")
        self._sections = {name: sections.get(name) or cls() for name, cls in classes.items()}
        self.user_keys: frozenset[str] = frozenset()
        """Dotted keys the user set (YAML file or overrides) to a value other than the default or
        preset one; method checks use it to reject options that belong to another method."""

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("_sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"config has no section {name!r}")

    def sections(self) -> dict[str, Any]:
        return dict(self._sections)

    def __eq__(self, other: object) -> bool:
        """Equal settings (which of them the user typed does not matter)."""
        return isinstance(other, Config) and self._sections == other._sections

    __hash__ = None  # mutable, like the dataclass sections it holds

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (tuples as lists), as written to the run's config.yaml."""
        return {name: _plain(dataclasses.asdict(section)) for name, section in self._sections.items()}
