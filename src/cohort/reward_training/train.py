"""Training an outcome or a process reward model: one logit per scored unit, binary cross-entropy.

``init`` is either a causal LM (a new single-logit head is put on it, seeded) or a reward model
this module (or anyone) wrote before: a sequence-classification model for the outcome RM, a
token-classification model for the PRM, with one label. The second case continues training, so an
iterative loop can update its reward model each round on fresh labels plus replayed old ones
(:func:`cohort.reward_training.with_replay`). The output directory holds an HF model + tokenizer
that ``reward.functions: [{name: reward_model, path: DIR}]`` and ``reward.process_model: {path: DIR}``
load as they are, and ``training.json`` with the report; it is written atomically (a temporary
directory renamed into place), so ``out_dir`` may be the ``init`` directory itself.

The model stays in eval mode (dropout off, as in cohort's RL training), so the training forward is
exactly the scoring forward and a seed fixes the run: the head's initialisation, the held-out
split and the batch order all derive from ``options.seed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from cohort.assets import resolve_builtin
from cohort.atomic import atomic_directory
from cohort.models.loading import (
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    resolve_model_source,
)
from cohort.optimisation.optimizer import build_optimizer
from cohort.reward_training.encoding import (
    Encoded,
    encode_outcome,
    encode_process,
    group_key,
    separator_ids,
    unit_labels,
    unit_logits,
)
from cohort.reward_training.examples import Example, OutcomeExample, ProcessExample
from cohort.reward_training.metrics import HeldOutMetrics, grouped_metrics

OUTCOME, PROCESS = "outcome", "process"
REPORT_FILE = "training.json"
_HEADS = {OUTCOME: ("ForSequenceClassification", AutoModelForSequenceClassification, OutcomeExample),
          PROCESS: ("ForTokenClassification", AutoModelForTokenClassification, ProcessExample)}


@dataclass(frozen=True)
class RewardTrainingOptions:
    """Settings of one reward-model training run (AdamW, BCE with logits on a single logit)."""

    lr: float = 1e-5
    epochs: int = 1
    batch_size: int = 8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    schedule: str = "constant"  # constant | cosine | linear (cohort.optimisation.optimizer), after warmup_steps
    warmup_steps: int = 0
    max_length: int | None = None  # token limit per input (None: the model's positions)
    held_out_fraction: float = 0.1  # used when no held-out set is given
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    threads: int | None = None  # torch CPU threads while training (None: leave as is)
    separator: str = "\n"  # PRM only: what follows each step (ProcessRewardModel's separator)
    eval_before: bool = True  # also measure the held-out metrics of the starting model
    patience: int | None = None  # early stopping: stop after this many epochs without a better held-out
    # within-group AUC and keep the best epoch's weights (None: run every epoch, keep the last)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"reward training: {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0 or self.weight_decay < 0 or self.max_grad_norm < 0 or self.warmup_steps < 0:
            raise ValueError("reward training: lr must be > 0 and weight_decay, max_grad_norm, warmup_steps >= 0")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ValueError(f"reward training: held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"reward training: max_length must be None or >= 2, got {self.max_length}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"reward training: threads must be None or >= 1, got {self.threads}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"reward training: patience must be None or an integer >= 1, got {self.patience!r}")


@dataclass
class RewardTrainingReport:
    """What a reward-model training run did and how well the result separates good from bad.

    Units are what gets a score: examples for the outcome RM, steps for the PRM. ``held_out`` is
    measured on the weights that were saved, ``held_out_before`` on the starting model (None without
    a held-out set); ``epoch_held_out`` after every epoch, and ``best_epoch`` is the epoch whose
    weights were saved (the best held-out within-group AUC under early stopping, else the last).
    """

    kind: str
    init: str
    init_mode: str  # "new_head" or "continued"
    out_dir: str
    train_examples: int
    held_out_examples: int
    train_units: int
    truncated: int  # inputs cut at max_length (PRM: steps past it are not trained on)
    dropped: int  # PRM examples with no step within max_length
    optimizer_steps: int
    loss_curve: list[float]  # training loss of every optimizer step
    epoch_losses: list[float]
    held_out: HeldOutMetrics | None
    held_out_before: HeldOutMetrics | None
    seconds: float
    options: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier runs on this model (continued training)
    epoch_held_out: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["held_out"] = self.held_out.to_dict() if self.held_out else None
        data["held_out_before"] = self.held_out_before.to_dict() if self.held_out_before else None
        return data

    def summary(self) -> str:
        """A few lines for a console: sizes, then the held-out within-group AUC (the headline; per step
        index for a PRM), pooled accuracy and AUC and the majority-class baseline, before -> after."""
        units = "steps" if self.kind == PROCESS else "examples"
        held = self.held_out.units if self.held_out else 0
        lines = [
            f"{self.kind} reward model ({self.init_mode.replace('_', ' ')} from {self.init}): {self.train_units} train / "
            f"{held} held-out {units}, {self.optimizer_steps} optimizer steps in {len(self.epoch_losses)} epoch(s) "
            f"(saved: epoch {self.best_epoch}) in {self.seconds:.1f} s",
            f"held-out: {describe_metrics(self.held_out)}",
        ]
        if self.held_out_before:
            lines.append(f"before:   {describe_metrics(self.held_out_before)}")
        lines.append(f"wrote {self.out_dir}")
        return "\n".join(lines)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def describe_metrics(m: HeldOutMetrics | None) -> str:
    """One line: within-group AUC (and per step index), pooled accuracy / AUC, majority baseline."""
    if m is None:
        return "n/a (no held-out set)"
    per_step = ""
    if m.per_step_within_group_auc:
        per_step = " (per step: " + ", ".join(_number(v) for v in m.per_step_within_group_auc) + ")"
    return (f"within-group AUC {_number(m.within_group_auc)} over {m.within_group_pairs} pairs{per_step}; pooled "
            f"accuracy {m.accuracy:.4f} (majority class {m.majority_accuracy:.4f}), AUC {_number(m.auc)}")


def train_outcome_model(examples: Sequence[OutcomeExample], init: str, out_dir: str | Path, *,
                        held_out: Sequence[OutcomeExample] | None = None,
                        options: RewardTrainingOptions | None = None, **overrides: Any) -> RewardTrainingReport:
    """Train an outcome reward model (sequence classification, one logit) and write it to ``out_dir``.

    ``init``: a causal LM (new head) or an outcome RM directory (continue). ``held_out``: a held-out
    set; else ``options.held_out_fraction`` of ``examples`` is held out (seeded). ``overrides``
    replace fields of ``options`` (e.g. ``lr=1e-4, epochs=3``).
    """
    return _train(OUTCOME, examples, init, out_dir, held_out, _options(options, overrides))


def train_process_model(examples: Sequence[ProcessExample], init: str, out_dir: str | Path, *,
                        held_out: Sequence[ProcessExample] | None = None,
                        options: RewardTrainingOptions | None = None, **overrides: Any) -> RewardTrainingReport:
    """Train a process reward model (token classification, one logit, scored at each step's
    separator) and write it to ``out_dir``. Arguments as :func:`train_outcome_model`; ``init`` is a
    causal LM or a PRM directory."""
    return _train(PROCESS, examples, init, out_dir, held_out, _options(options, overrides))


def _options(options: RewardTrainingOptions | None, overrides: dict[str, Any]) -> RewardTrainingOptions:
    base = options or RewardTrainingOptions()
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(RewardTrainingOptions)})
    if unknown:
        raise ValueError(f"reward training: unknown options {unknown}")
    return dataclasses.replace(base, **overrides)


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_examples(kind: str, examples: Sequence[Example], what: str) -> None:
    expected = _HEADS[kind][2]
    wrong = next((e for e in examples if not isinstance(e, expected)), None)
    if wrong is not None:
        raise ValueError(f"{kind} reward training takes {expected.__name__}s; {what} holds a {type(wrong).__name__}")


def _train(kind: str, examples: Sequence[Example], init: str, out_dir: str | Path,
           held_out: Sequence[Example] | None, options: RewardTrainingOptions) -> RewardTrainingReport:
    """Load, encode, split, measure, fit, measure again, save; return the report."""
    _check_examples(kind, examples, "examples")
    _check_examples(kind, held_out or [], "held_out")
    if not examples:
        raise ValueError(f"{kind} reward training needs at least one example")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(options.seed)  # split and batch order
    with _torch_threads(options.threads):
        device = resolve_device(options.device)
        model, tokenizer, mode, history = _load(kind, str(init), options, device)
        encode = _encoder(kind, tokenizer, options, model)
        train_examples, held_examples = (list(examples), list(held_out)) if held_out is not None else _split(
            examples, options.held_out_fraction, generator)
        train_items, held_items = [encode(e) for e in train_examples], [encode(e) for e in held_examples]
        dropped = sum(item is None for item in train_items + held_items)
        train_items = [item for item in train_items if item is not None]
        held_items = [item for item in held_items if item is not None]
        if not train_items:
            raise ValueError(f"{kind} reward training: no training example fits within {_max_length(model, options)} tokens")
        pad = tokenizer.pad_token_id

        def measure() -> HeldOutMetrics | None:
            return _evaluate(model, held_items, options.batch_size, pad, device, kind)

        before = measure() if options.eval_before else None
        fit = _fit(model, train_items, options, pad, device, generator, measure)
    report = RewardTrainingReport(
        kind=kind, init=str(init), init_mode=mode, out_dir=str(out_dir), train_examples=len(train_examples),
        held_out_examples=len(held_examples), train_units=sum(len(i.labels) for i in train_items),
        truncated=sum(i.truncated for i in train_items + held_items), dropped=dropped, optimizer_steps=len(fit.curve),
        loss_curve=fit.curve, epoch_losses=fit.epoch_losses, held_out=fit.held_out, held_out_before=before,
        seconds=time.perf_counter() - start, options=dataclasses.asdict(options), history=history,
        epoch_held_out=[m.to_dict() if m else {} for m in fit.epoch_held_out], best_epoch=fit.best_epoch)
    _save(model, tokenizer, Path(out_dir), report)
    return report


def _load(kind: str, init: str, options: RewardTrainingOptions, device: torch.device):
    """-> (model with a single-logit head, tokenizer with a pad token, init mode, earlier history)"""
    suffix, auto_class, _ = _HEADS[kind]
    other = _HEADS[OUTCOME if kind == PROCESS else PROCESS][0]
    source = resolve_model_source(resolve_builtin(init), what="model")
    architecture = (AutoConfig.from_pretrained(source).architectures or [""])[0]
    if architecture.endswith(other):
        raise ValueError(f"{init!r} is a {architecture}; {kind} reward training starts from a causal LM or a *{suffix} model")
    continued = architecture.endswith(suffix)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)  # a new head's initial weights
        extra = {} if continued else {"num_labels": 1}
        model = auto_class.from_pretrained(source, dtype=resolve_dtype(options.dtype), **extra)
    if model.config.num_labels != 1:
        raise ValueError(f"{init!r} has {model.config.num_labels} output labels; reward training needs a single-logit head")
    tokenizer = load_tokenizer(source)
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id  # the head pools the last token that is not this one
    model.to(device).eval().requires_grad_(True)
    return model, tokenizer, "continued" if continued else "new_head", _history(Path(source)) if continued else []


def _history(directory: Path) -> list[dict[str, Any]]:
    """Earlier training runs of a reward model (from its training.json), loss curves left out."""
    path = directory / REPORT_FILE
    if not path.is_file():
        return []
    previous = json.loads(path.read_text(encoding="utf-8"))
    earlier = previous.pop("history", [])
    previous.pop("loss_curve", None)
    return [*earlier, previous]


def _max_length(model, options: RewardTrainingOptions) -> int | None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if options.max_length is None:
        return limit
    return options.max_length if limit is None else min(options.max_length, limit)


def _encoder(kind: str, tokenizer, options: RewardTrainingOptions, model) -> Callable[[Example], Encoded | None]:
    limit = _max_length(model, options)
    if kind == OUTCOME:
        return lambda example: encode_outcome(tokenizer, example, limit)
    separator = separator_ids(tokenizer, options.separator)
    return lambda example: encode_process(tokenizer, example, separator, limit)


def _split(examples: Sequence[Example], fraction: float, generator: torch.Generator) -> tuple[list[Example], list[Example]]:
    """A seeded held-out share of whole prompts (every sample of a held-out prompt is held out, so
    within-group AUC has groups to compare): prompts in a seeded order until ``fraction`` of the
    examples; at least one prompt when the fraction is > 0 and there are two."""
    keys = [group_key(e.prompt) for e in examples]
    distinct = list(dict.fromkeys(keys))
    if fraction == 0 or len(distinct) < 2:
        return list(examples), []
    wanted, held_groups, taken = max(1, round(fraction * len(examples))), set(), 0
    count = Counter(keys)
    for index in torch.randperm(len(distinct), generator=generator).tolist()[: len(distinct) - 1]:
        if taken >= wanted:
            break
        held_groups.add(distinct[index])
        taken += count[distinct[index]]
    return ([e for e, k in zip(examples, keys) if k not in held_groups],
            [e for e, k in zip(examples, keys) if k in held_groups])


@dataclass
class _Fit:
    """What fitting did: the loss curve, per-epoch losses and held-out metrics, the epoch kept."""

    curve: list[float]
    epoch_losses: list[float]
    epoch_held_out: list[HeldOutMetrics | None]
    held_out: HeldOutMetrics | None
    best_epoch: int


def _selection_score(metrics: HeldOutMetrics | None) -> float:
    """What early stopping maximises: the within-group AUC, else the pooled AUC, else -loss."""
    if metrics is None:
        return 0.0
    for value in (metrics.within_group_auc, metrics.auc):
        if value is not None:
            return value
    return -metrics.loss


def _fit(model, items: list[Encoded], options: RewardTrainingOptions, pad: int, device: torch.device,
         generator: torch.Generator, measure: Callable[[], HeldOutMetrics | None]) -> _Fit:
    """Epochs of shuffled mini-batches (the loss is the mean BCE over the batch's scored units), the
    held-out set measured after each; with ``patience``, stop once that many epochs bring no better
    within-group AUC and restore the best epoch's weights."""
    batches_per_epoch = -(-len(items) // options.batch_size)
    optimizer, scheduler = build_optimizer(
        model.parameters(), lr=options.lr, betas=(0.9, 0.999), weight_decay=options.weight_decay, eps=1e-8,
        schedule=options.schedule, total_steps=options.epochs * batches_per_epoch, warmup_steps=options.warmup_steps,
        min_ratio=0.0)
    fit = _Fit([], [], [], None, 0)
    best_state, best_score = None, float("-inf")
    for epoch in range(1, options.epochs + 1):
        losses = _epoch(model, items, options, pad, device, generator, optimizer, scheduler)
        fit.curve.extend(losses)
        fit.epoch_losses.append(sum(losses) / len(losses))
        metrics = measure()
        fit.epoch_held_out.append(metrics)
        if options.patience is None:
            fit.held_out, fit.best_epoch = metrics, epoch
            continue
        if _selection_score(metrics) > best_score:
            best_score, fit.held_out, fit.best_epoch = _selection_score(metrics), metrics, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - fit.best_epoch >= options.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return fit


def _epoch(model, items: list[Encoded], options: RewardTrainingOptions, pad: int, device: torch.device,
           generator: torch.Generator, optimizer, scheduler) -> list[float]:
    """One shuffled pass; returns the loss of every optimizer step."""
    order = torch.randperm(len(items), generator=generator).tolist()
    losses = []
    for start in range(0, len(items), options.batch_size):
        batch = [items[i] for i in order[start : start + options.batch_size]]
        logits = unit_logits(model, batch, pad, device)  # [units]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, unit_labels(batch, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if options.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def _evaluate(model, items: list[Encoded], batch_size: int, pad: int, device: torch.device, kind: str) -> HeldOutMetrics | None:
    """Every held-out metric of the model as it is now (None without a held-out set)."""
    if not items:
        return None
    logits: list[float] = []
    for start in range(0, len(items), batch_size):
        logits.extend(unit_logits(model, items[start : start + batch_size], pad, device).tolist())
    per_item, cursor = [], 0
    for item in items:
        per_item.append(logits[cursor : cursor + len(item.labels)])
        cursor += len(item.labels)
    return grouped_metrics(per_item, [item.labels for item in items], [item.group for item in items], kind == PROCESS)


def _save(model, tokenizer, out_dir: Path, report: RewardTrainingReport) -> None:
    """HF model + tokenizer + training.json, renamed into place in one step."""
    with atomic_directory(out_dir) as temporary:
        model.save_pretrained(temporary, safe_serialization=True)
        tokenizer.save_pretrained(temporary)
        (temporary / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
