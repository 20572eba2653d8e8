"""Typed, nested run configuration: YAML + dotted command-line overrides + algorithm presets.

Precedence, lowest first: the defaults below, the chosen ``algorithm.preset`` (its loss knobs and
recommended run settings), the YAML file, then ``key=value`` overrides. Every key, type and range
is checked here; names that refer to registered pieces (aggregations, estimators, methods) and the
method-specific rules are checked by :func:`cohort.methods.check_config` where the pieces are
built, before any model loads. This module imports nothing from the rest of cohort.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from types import MappingProxyType
from typing import Mapping


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
    A name is a built-in (see README) or ``module:callable``; ``alias`` renames it in the logs."""
    timeout_s: float = 60.0
    """A reward call that runs longer gives None for its samples (never kills the run)."""
    strict: bool = False
    """Raise instead of scoring None when a reward function fails."""
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
    batch_size, device, dtype, label}`` (a local HF token-classification model)."""


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


@dataclass
class AlgorithmConfig:
    method: str = "grpo"
    """The training method (DeepSeekMath's unified paradigm): grpo (and its family via ``preset``), ppo, dpo, sft, rft or online_rft."""
    preset: str = "grpo"
    """Method grpo: a named bundle of the knobs below (spec §8.5, ``cohort presets``); explicit keys override it."""
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
    """KL coefficient against the reference model (GRPO: in the loss; PPO: in the reward); 0 = no reference model is loaded."""
    kl_estimator: str = "k3"
    """GRPO's KL estimator in the loss: k1, k2 or k3 (DeepSeekMath's unbiased, non-negative estimator)."""
    control_weight: float = 1.0
    """Weight alpha of the first (control) token in the decoupled aggregation."""
    mu: int = 1
    """Optimisation passes over each rollout batch (GRPO iterations, PPO epochs)."""
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


@dataclass
class SFTConfig:
    target_column: str | None = None
    """Method sft: the column holding each row's target completion; null = 'target', else 'completion', else data.answer_column."""


@dataclass
class OfflineConfig:
    samples_per_prompt: int = 8
    """Methods rft and dpo (pairs from samples): completions drawn once per training prompt from the initial policy."""
    max_prompts: int | None = None
    """Draw for at most this many training prompts (a seeded choice); null = all of them."""


@dataclass
class DPOConfig:
    beta: float = 0.1
    """DPO's beta: the scale of the implicit reward beta * log(pi / pi_ref)."""
    length_normalized: bool = False
    """Use per-token means of the log-ratios (DeepSeekMath A.1.4 Eq. 12) instead of sums (standard DPO)."""
    pairs: Literal["samples", "dataset"] = "samples"
    """samples: (correct, incorrect) pairs from the initial policy's samples of each prompt (the paper); dataset: chosen/rejected columns of the training file."""
    chosen_column: str = "chosen"
    """pairs=dataset: the column holding the preferred completion."""
    rejected_column: str = "rejected"
    """pairs=dataset: the column holding the dispreferred completion."""
    pairs_per_prompt: int = 1
    """pairs=samples: at most this many distinct (correct, incorrect) pairs per prompt."""


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
    """Methods sft, rft, dpo: examples per step (rows; DPO: pairs); null = rollout.prompts_per_step x rollout.group_size sequences (DPO: half as many pairs)."""
    seed: int = 0
    """Seeds data order, sampling and initial RNG state: same seed, same machine, same run."""
    out_dir: str = "runs/cohort"
    """The run directory (config.yaml, metrics.jsonl, checkpoints/, final/, report.html, ...)."""
    resume: bool = False
    """Continue from the latest checkpoint in out_dir."""
    overwrite: bool = False
    """Allow starting afresh in an out_dir that already holds a run (its files are replaced)."""
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
    """DeepSeekMath Algorithm 1 (method grpo): outer iterations; 0 = off. Each resets the reference to the policy, trains steps_per_iteration steps with the current reward model, then continues training the reward model on fresh policy samples plus a replay share."""
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
    """Share of each iteration's fresh data held out to measure the reward model (accuracy, AUC)."""


@dataclass
class DistributedConfig:
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    """Under torchrun (more than one rank): DDP (each rank holds the whole model) or FSDP2 (parameters, gradients and optimizer state sharded at rest). Ignored in one process."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend: auto = NCCL with CUDA, else gloo."""
    timeout_s: float = 1800.0
    """How long a rank waits for the others at a collective before the run fails."""


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


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    iterative: IterativeConfig = field(default_factory=IterativeConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        self.user_keys: frozenset[str] = frozenset()
        """Dotted keys the user set (YAML file or overrides) to a value other than the default or
        preset one; method checks use it to reject options that belong to another method."""

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (tuples as lists), as written to the run's config.yaml."""
        return _plain(dataclasses.asdict(self))


# --- loading --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def _field_types() -> dict[str, Any]:
    """Every dotted key with its resolved annotation."""
    types_by_key = {}
    for section, cls in _sections().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            types_by_key[f"{section}.{f.name}"] = hints[f.name]
    return types_by_key


FIELD_TYPES: dict[str, Any] = _field_types()


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(FIELD_TYPES), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    section = key.split(".")[0]
    if section in _sections():
        allowed = sorted(k.split(".", 1)[1] for k in FIELD_TYPES if k.startswith(section + "."))
        return ConfigError(f"unknown config key {key!r}{hint} (keys of section {section!r}: {', '.join(allowed)})")
    return ConfigError(f"unknown config key {key!r}{hint} (sections: {', '.join(_sections())})")


def _flatten(tree: Any, source: str) -> dict[str, Any]:
    """{'rollout': {'group_size': 4}} -> {'rollout.group_size': 4}, rejecting unknown keys."""
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections, got {type(tree).__name__}")
    flat = {}
    for section, values in tree.items():
        if section not in _sections():
            raise _unknown_key(str(section))
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys, got {values!r}")
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted not in FIELD_TYPES:
                raise _unknown_key(dotted)
            flat[dotted] = value
    return flat


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["rollout.group_size=16", "train.resume=true"]`` -> dotted dict with YAML-typed values."""
    flat = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        if key not in FIELD_TYPES:
            raise _unknown_key(key)
        try:
            flat[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
    return flat


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin in (list, tuple, dict):
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def _coerce_union(key: str, value: Any, annotation: Any, error: ConfigError) -> Any:
    args = typing.get_args(annotation)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(key, value, arg)
        except ConfigError:
            continue
    raise error


def _coerce_scalar(value: Any, annotation: Any, error: ConfigError) -> Any:
    """bool, int, float and str, with the obvious conversions (``"1e-5"`` -> float, 3.0 -> 3)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int and is_number and float(value).is_integer():
        return int(value)
    if annotation is float:
        if is_number:
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise error from None
    if annotation is str and (isinstance(value, str) or is_number):
        return str(value)
    raise error


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against ``annotation`` and return it in that type; ConfigError otherwise."""
    error = ConfigError(f"{key}={value!r} is not allowed: expected {_describe(annotation)}")
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return _coerce_union(key, value, annotation, error)
    if origin is Literal:
        if value in typing.get_args(annotation):
            return value
        raise error
    if annotation in (bool, int, float, str):
        return _coerce_scalar(value, annotation, error)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str) and item_type is str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise error
        return [_coerce(f"{key}[{i}]", item, item_type) for i, item in enumerate(value)]
    if origin is tuple:
        item_types = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise error
        return tuple(_coerce(f"{key}[{i}]", item, t) for i, (item, t) in enumerate(zip(value, item_types)))
    if origin is dict:
        if not isinstance(value, dict):
            raise error
        return dict(value)
    if annotation is Any:
        return value
    raise error


def _check(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {expected}")


def _validate_sampling(config: Config) -> None:
    r, t = config.rollout, config.train
    _check(r.group_size >= 1, "rollout.group_size", r.group_size, "an int >= 1")
    _check(r.prompts_per_step >= 1, "rollout.prompts_per_step", r.prompts_per_step, "an int >= 1")
    _check(r.max_new_tokens >= 1, "rollout.max_new_tokens", r.max_new_tokens, "an int >= 1")
    _check(r.temperature > 0, "rollout.temperature", r.temperature, "a float > 0 (training samples)")
    _check(0 < r.top_p <= 1, "rollout.top_p", r.top_p, "a float in (0, 1]")
    _check(r.top_k >= 0, "rollout.top_k", r.top_k, "an int >= 0 (0 = off)")
    _check(t.steps >= 0, "train.steps", t.steps, "an int >= 0")
    _check(t.batch_size is None or t.batch_size >= 1, "train.batch_size", t.batch_size, "null or an int >= 1")
    _check(t.save_every >= 0, "train.save_every", t.save_every, "an int >= 0 (0 = only at the end)")
    _check(t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints, "an int >= 1")
    _check(t.eval_samples >= 1, "train.eval_samples", t.eval_samples, "an int >= 1")
    _check(t.eval_every >= 0, "train.eval_every", t.eval_every, "an int >= 0 (0 = never)")
    _check(t.threads is None or t.threads >= 1, "train.threads", t.threads, "null or an int >= 1")
    _check(bool(t.out_dir), "train.out_dir", t.out_dir, "a directory path")
    _check(config.log.completions_every >= 0, "log.completions_every", config.log.completions_every, "an int >= 0")
    _check(config.distributed.timeout_s > 0, "distributed.timeout_s", config.distributed.timeout_s, "a float > 0")


def _validate_algorithm(config: Config) -> None:
    a, o = config.algorithm, config.optim
    _check(a.std_ddof in (0, 1), "algorithm.std_ddof", a.std_ddof, "0 (population) or 1 (sample)")
    _check(a.adv_eps >= 0, "algorithm.adv_eps", a.adv_eps, "a float >= 0")
    _check(a.eps_low >= 0, "algorithm.eps_low", a.eps_low, "a float >= 0")
    _check(a.eps_high >= 0, "algorithm.eps_high", a.eps_high, "a float >= 0")
    _check(a.dual_clip is None or a.dual_clip > 1, "algorithm.dual_clip", a.dual_clip, "null or a float > 1")
    _check(a.beta >= 0, "algorithm.beta", a.beta, "a float >= 0")
    _check(a.mu >= 1, "algorithm.mu", a.mu, "an int >= 1")
    _check(a.ref_reset_every >= 0, "algorithm.ref_reset_every", a.ref_reset_every, "an int >= 0 (0 = never)")
    _check(a.dynamic_sampling_max_rounds >= 1, "algorithm.dynamic_sampling_max_rounds", a.dynamic_sampling_max_rounds, "an int >= 1")
    _check(0 <= a.overlong_buffer < 1, "algorithm.overlong_buffer", a.overlong_buffer, "a fraction in [0, 1)")
    _check(o.lr > 0, "optim.lr", o.lr, "a float > 0")
    _check(o.max_grad_norm >= 0, "optim.max_grad_norm", o.max_grad_norm, "a float >= 0 (0 = off)")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, "an int >= 0")
    _check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", o.min_lr_ratio, "a fraction in [0, 1]")
    _check(o.mini_batches >= 1, "optim.mini_batches", o.mini_batches, "an int >= 1")
    _check(o.micro_batch_size >= 1, "optim.micro_batch_size", o.micro_batch_size, "an int >= 1")
    _check(o.micro_batch_tokens >= 0, "optim.micro_batch_tokens", o.micro_batch_tokens, "an int >= 0 (0 = rows only)")
    _check(all(0 <= b < 1 for b in o.betas), "optim.betas", list(o.betas), "two floats in [0, 1)")
    p, d = config.ppo, config.dpo
    _check(p.value_lr is None or p.value_lr > 0, "ppo.value_lr", p.value_lr, "null or a float > 0")
    _check(0 <= p.gamma <= 1, "ppo.gamma", p.gamma, "a float in [0, 1]")
    _check(0 <= p.lam <= 1, "ppo.lam", p.lam, "a float in [0, 1]")
    _check(p.value_clip > 0, "ppo.value_clip", p.value_clip, "a float > 0")
    _check(bool(p.value_init), "ppo.value_init", p.value_init, "'policy' or a model directory")
    _check(d.beta > 0, "dpo.beta", d.beta, "a float > 0")
    _check(d.pairs_per_prompt >= 1, "dpo.pairs_per_prompt", d.pairs_per_prompt, "an int >= 1")
    off = config.offline
    _check(off.samples_per_prompt >= 1, "offline.samples_per_prompt", off.samples_per_prompt, "an int >= 1")
    _check(off.max_prompts is None or off.max_prompts >= 1, "offline.max_prompts", off.max_prompts, "null or an int >= 1")


def _validate_iterative(config: Config, steps_set: bool) -> None:
    """Iterative RL's ranges, and train.steps = iterations x steps_per_iteration (set when left unset)."""
    i = config.iterative
    _check(i.iterations >= 0, "iterative.iterations", i.iterations, "an int >= 0 (0 = off)")
    if i.iterations == 0:
        return
    _check(i.steps_per_iteration >= 1, "iterative.steps_per_iteration", i.steps_per_iteration, "an int >= 1 with iterative.iterations > 0")
    _check(i.rm_samples >= 1 and i.mc_rollouts >= 1 and i.rm_epochs >= 1 and i.rm_batch_size >= 1, "iterative.rm_samples",
           i.rm_samples, "rm_samples, mc_rollouts, rm_epochs and rm_batch_size all >= 1")
    _check(0 <= i.replay_fraction < 1, "iterative.replay_fraction", i.replay_fraction, "a fraction in [0, 1)")
    _check(0 <= i.rm_held_out < 1, "iterative.rm_held_out", i.rm_held_out, "a fraction in [0, 1)")
    _check(i.rm_lr > 0, "iterative.rm_lr", i.rm_lr, "a float > 0")
    wanted_labels = ("rule",) if i.supervision == "outcome" else ("monte_carlo", "gold")
    _check(i.labels in wanted_labels, "iterative.labels", i.labels, f"one of {', '.join(wanted_labels)} with iterative.supervision={i.supervision}")
    process = config.algorithm.advantage == "process"
    _check(process == (i.supervision == "process"), "algorithm.advantage", config.algorithm.advantage,
           "process exactly when iterative.supervision=process")
    total = i.iterations * i.steps_per_iteration
    if steps_set:
        _check(config.train.steps == total, "train.steps", config.train.steps,
               f"iterative.iterations x iterative.steps_per_iteration = {total} (or leave train.steps unset)")
    config.train.steps = total


def _validate_data_and_rewards(config: Config) -> None:
    d, w = config.data, config.reward
    _check(bool(config.model.path), "model.path", config.model.path, "a model directory (or hub id)")
    _check(0 <= d.test_fraction < 1, "data.test_fraction", d.test_fraction, "a fraction in [0, 1)")
    _check(not (d.test_path and d.test_fraction), "data.test_fraction", d.test_fraction, "0 when data.test_path is set (one held-out source)")
    _check(d.eval_limit is None or d.eval_limit >= 1, "data.eval_limit", d.eval_limit, "null or an int >= 1")
    if d.format != "plain":
        _check((d.prompt_column, d.answer_column) == ("prompt", "answer"), "data.format", d.format,
               "plain when data.prompt_column / data.answer_column are changed (gsm8k / math name their source "
               "columns with data.question_column / data.solution_column and produce prompt / answer)")
    else:
        _check(d.question_column is None and d.solution_column is None, "data.question_column", d.question_column,
               "null unless data.format is gsm8k or math")
    _check(w.timeout_s > 0, "reward.timeout_s", w.timeout_s, "a float > 0")
    _check(w.ray_workers >= 1, "reward.ray_workers", w.ray_workers, "an int >= 1")
    _check(w.ray_chunk_size >= 1, "reward.ray_chunk_size", w.ray_chunk_size, "an int >= 1")
    iterative_process = config.iterative.iterations > 0 and config.iterative.supervision == "process"
    if config.algorithm.advantage == "process" and not iterative_process:
        _check(bool(w.process_model) and isinstance(w.process_model.get("path"), str), "reward.process_model",
               w.process_model, "a mapping with a 'path' to a process reward model, since algorithm.advantage=process")
    elif iterative_process:
        _check(w.process_model is None or "path" not in w.process_model, "reward.process_model", w.process_model,
               "no 'path' with iterative.supervision=process (the iterations train the PRM; set iterative.reward_model "
               "to start from one)")
    else:
        _check(w.process_model is None, "reward.process_model", w.process_model, "null unless algorithm.advantage=process")
    for i, spec in enumerate(w.functions):
        _check(isinstance(spec.get("name"), str) and bool(spec["name"]), f"reward.functions[{i}]", spec, "a mapping with a 'name'")
        weight = spec.get("weight", 1.0)
        _check(isinstance(weight, (int, float)) and not isinstance(weight, bool), f"reward.functions[{i}].weight", weight, "a number")


# --- presets (spec §8.5): named bundles of settings of method grpo ---------------------------------


@dataclass(frozen=True)
class Preset:
    """A named GRPO-family algorithm: dotted config settings applied under the user's own values."""

    name: str
    summary: str
    settings: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))


_PRESETS = [
    Preset("grpo", "GRPO as in DeepSeekMath Eq. 3 (group-normalised advantages, per-sequence token mean, k3 KL "
           "with beta 0.04), without the paper's large-scale run settings", {"algorithm.beta": 0.04}),
    Preset("deepseekmath", "GRPO with DeepSeekMath's published settings: G=64, beta=0.04, mu=1, lr 1e-6",
           {"algorithm.beta": 0.04, "rollout.group_size": 64, "algorithm.mu": 1, "optim.lr": 1e-6}),
    Preset("r1_zero", "DeepSeek-R1-Zero: GRPO with beta=0.001, G=16, temperature 1, reference reset every 400 steps",
           {"algorithm.beta": 0.001, "rollout.group_size": 16, "rollout.temperature": 1.0,
            "algorithm.ref_reset_every": 400, "optim.lr": 3e-6}),
    Preset("dr_grpo", "Dr. GRPO: centred advantages (no std), token sums over a constant L_max, no KL",
           {"algorithm.advantage": "group_center", "algorithm.aggregation": "seq_sum_const", "algorithm.beta": 0.0,
            "rollout.group_size": 8, "rollout.temperature": 1.0, "optim.lr": 1e-6, "optim.betas": (0.9, 0.95),
            "optim.weight_decay": 0.0, "optim.max_grad_norm": 1.0}),
    Preset("dapo", "DAPO: clip-higher (0.2/0.28), token-mean loss, no KL, dynamic sampling, soft overlong punishment",
           {"algorithm.aggregation": "token_mean", "algorithm.eps_low": 0.2, "algorithm.eps_high": 0.28,
            "algorithm.beta": 0.0, "rollout.group_size": 16, "rollout.temperature": 1.0,
            "algorithm.dynamic_sampling": True, "algorithm.overlong_buffer": 0.2}),
    Preset("gspo", "GSPO: sequence-level (length-normalised) importance ratio with a tight clip, no KL",
           {"algorithm.policy_loss": "sequence_clip", "algorithm.eps_low": 3e-4, "algorithm.eps_high": 4e-4,
            "algorithm.beta": 0.0}),
    Preset("rloo", "RLOO: leave-one-out baseline (r_i minus the mean of the other samples), no std, no KL",
           {"algorithm.advantage": "rloo", "algorithm.aggregation": "token_mean", "algorithm.beta": 0.0}),
    Preset("degrpo", "DeGRPO (Thinkless): centred advantages, control token weighted apart (alpha=0.001), k3 KL 0.001",
           {"algorithm.advantage": "group_center", "algorithm.aggregation": "decoupled",
            "algorithm.control_weight": 0.001, "algorithm.beta": 0.001}),
    Preset("trl_parity", "TRL GRPOTrainer defaults (sample std + 1e-4, token-mean loss, beta 0) for side-by-side comparisons",
           {"algorithm.aggregation": "token_mean", "algorithm.beta": 0.0, "algorithm.std_ddof": 1, "algorithm.adv_eps": 1e-4}),
]

PRESETS: Mapping[str, Preset] = MappingProxyType({preset.name: preset for preset in _PRESETS})
"""The algorithm presets by name (``algorithm.preset``; ``cohort presets`` lists them)."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ConfigError lists the available ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"algorithm.preset={name!r} is not allowed: expected one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


# --- building -----------------------------------------------------------------------------------------


def _resolve(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Later layers win; every value coerced to its field's type."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return {key: _coerce(key, value, FIELD_TYPES[key]) for key, value in merged.items()}


def _default_value(key: str) -> Any:
    section, name = key.split(".", 1)
    return getattr(_sections()[section](), name)


def build_config(flat: dict[str, Any], *, base: dict[str, Any] | None = None) -> Config:
    """A validated Config from the user's dotted values (``flat``) over ``base``, the preset and the defaults.

    ``Config.user_keys`` records which of ``flat``'s keys differ from what the lower layers give.
    """
    base = base or {}
    for key in [*base, *flat]:
        if key not in FIELD_TYPES:
            raise _unknown_key(key)
    preset = get_preset(flat.get("algorithm.preset", base.get("algorithm.preset", AlgorithmConfig.preset)))
    lower = _resolve([dict(preset.settings), base])
    resolved = _resolve([lower, flat])
    sections: dict[str, dict[str, Any]] = {name: {} for name in _sections()}
    for key, value in resolved.items():
        section, name = key.split(".", 1)
        sections[section][name] = value
    config = Config(**{name: cls(**sections[name]) for name, cls in _sections().items()})
    _validate_data_and_rewards(config)
    _validate_iterative(config, steps_set="train.steps" in flat)
    _validate_sampling(config)
    _validate_algorithm(config)
    config.user_keys = frozenset(key for key in flat if resolved[key] != lower.get(key, _default_value(key)))
    return config


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as 'line L, column C: problem' (1-based), in one line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Config from an optional YAML file and ``key=value`` overrides (``base`` is a lower YAML layer)."""
    flat: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            tree = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
        flat.update(_flatten(tree, str(path)))
    flat.update(parse_overrides(overrides or []))
    return build_config(flat, base=_flatten(base, "base config") if base else None)


def save_config(config: Config, path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
