"""A run at a glance: one self-contained ``report.html`` built from a run directory.

The page needs no network to view: inline CSS, plots as PNG data URIs drawn with matplotlib's Agg
renderer, no scripts and no external fonts. It reads only the run directory contract (DESIGN.md,
"The run directory"): ``metrics.jsonl`` (required), and ``config.yaml``, ``completions.jsonl``,
``eval_before.json`` and ``eval_after.json`` when they exist. Metrics a run did not record are
skipped and listed on the page, never an error. All text from the run (completions are untrusted
model output) is HTML-escaped by the template engine.

    write_report(Path("runs/demo"))  # -> runs/demo/report.html
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from cohort.training.checkpoint import RunDirectory

MAX_COMPLETIONS = 50
"""Sampled completions shown in the table (the latest ones)."""
MAX_TEXT_CHARS = 20_000
"""A prompt or completion longer than this is cut (the page stays small; the file has it all)."""
SMALL_SERIES = 40
"""Series with at most this many points get markers (a single point draws no line)."""

FIGURE_SIZE_IN = (6.4, 3.0)
FIGURE_DPI = 100  # a panel PNG is 640 x 300 pixels
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class ReportError(ValueError):
    """The run directory cannot be reported on (missing, not a run, or a file that is not valid)."""


# --- reading the run directory ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunData:
    """Everything the report shows, read from one run directory."""

    root: Path
    metrics: list[dict[str, Any]]
    """One record per step, in step order (a step logged twice keeps its later line)."""
    config: dict[str, Any] | None
    config_text: str | None
    completions: list[dict[str, Any]]
    """The latest sampled completions, latest step first."""
    eval_before: dict[str, Any] | None
    eval_after: dict[str, Any] | None
    iterations: list[dict[str, Any]] = ()  # iterative RL: each iteration's reward-model report
    """Iterative RL: one record per reward-model training (iteration, held-out accuracy, AUC, examples)."""


def load_run(run_dir: Path, max_completions: int = MAX_COMPLETIONS) -> RunData:
    """Read a run directory; raise ReportError saying what is missing or malformed."""
    paths = RunDirectory(Path(run_dir))
    if not paths.root.is_dir():
        raise ReportError(f"{paths.root} does not exist or is not a directory: expected a cohort run directory")
    if not paths.metrics.is_file():
        raise ReportError(
            f"{paths.root} has no metrics.jsonl: not a cohort run directory, or no step has finished yet"
        )
    metrics = read_metrics(paths.metrics)
    if not metrics:
        raise ReportError(f"{paths.metrics} is empty: no step has finished yet")
    config_text = _read_text(paths.config) if paths.config.is_file() else None
    return RunData(
        root=paths.root,
        metrics=metrics,
        config=_parse_config(config_text, paths.config) if config_text is not None else None,
        config_text=config_text,
        completions=read_latest_completions(paths.completions, max_completions),
        eval_before=read_eval_summary(paths.eval_summary("before")),
        eval_after=read_eval_summary(paths.eval_summary("after")),
        iterations=read_iterations(paths.root),
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ReportError(f"{path} is not UTF-8 text (bad byte at offset {err.start})") from None


def _lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a text file with their 1-based numbers."""
    return [(n, line) for n, line in enumerate(_read_text(path).splitlines(), start=1) if line.strip()]


def _json_object(line: str, path: Path, line_number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} line {line_number} is not valid JSON ({err.msg}): {line[:80]!r}") from None
    if not isinstance(record, dict):
        raise ReportError(f"{path} line {line_number}: expected a JSON object, got {type(record).__name__}")
    return record


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The per-step records of ``metrics.jsonl`` sorted by step; each must be an object with an int ``step``."""
    by_step: dict[int, dict[str, Any]] = {}
    for line_number, line in _lines(path):
        record = _json_object(line, path, line_number)
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise ReportError(f"{path} line {line_number}: expected an integer 'step', got {step!r}")
        by_step[step] = record  # a resumed run may repeat a step: the later line wins
    return [by_step[step] for step in sorted(by_step)]


def read_latest_completions(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` records of ``completions.jsonl``, latest step first (file order within a step)."""
    if limit <= 0 or not path.is_file():
        return []
    tail = _lines(path)[-limit:]
    records = [_json_object(line, path, n) for n, line in tail]
    return sorted(records, key=lambda record: -_step_of(record))  # stable: file order within a step


def _step_of(record: dict[str, Any]) -> float:
    step = record.get("step")
    return float(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else -math.inf


def read_iterations(root: Path) -> list[dict[str, Any]]:
    """The reward model's report of each iteration of an iterative run (``iterations/iter-K/reward_model/training.json``)."""
    records = []
    for directory in sorted((root / "iterations").glob("iter-*")):
        path = directory / "reward_model" / "training.json"
        if not path.is_file() or not directory.name[5:].isdigit():
            continue
        try:
            report = json.loads(_read_text(path))
        except json.JSONDecodeError as err:
            raise ReportError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
        held = report.get("held_out") or {}
        records.append({"iteration": int(directory.name[5:]), "accuracy": held.get("accuracy"), "auc": held.get("auc"),
                        "examples": report.get("train_examples"), "kind": report.get("kind")})
    return sorted(records, key=lambda record: record["iteration"])


def read_eval_summary(path: Path) -> dict[str, Any] | None:
    """An ``eval_<label>.json`` summary as a dict, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        summary = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{path}: expected a JSON object (an evaluation summary), got {type(summary).__name__}")
    return summary


def _parse_config(text: str, path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        where = f" line {err.problem_mark.line + 1}" if err.problem_mark is not None else ""
        raise ReportError(f"{path}{where} is not valid YAML ({err.problem or err.context})") from None
    except yaml.YAMLError as err:
        raise ReportError(f"{path} is not valid YAML ({' '.join(str(err).split())})") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ReportError(f"{path}: expected a mapping of config sections, got {type(config).__name__}")
    return config


# --- numbers ------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def format_number(value: Any, signed: bool = False) -> str:
    """A number as the page shows it: 4 significant digits, '—' for missing/null/non-finite.

    >>> format_number(0.8333333), format_number(12), format_number(None), format_number(0.25, signed=True)
    ('0.8333', '12', '—', '+0.25')
    """
    number = _finite(value)
    if number is None:
        return "—"
    if isinstance(value, int) and not signed:
        return str(value)
    return f"{number:+.4g}" if signed else f"{number:.4g}"


def format_duration(seconds: float | None) -> str:
    """Seconds as '42.0 s', '3 min 05 s' or '2 h 07 min'."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def metric_columns(metrics: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every metric key as a float column over the steps (NaN where a step has no finite number)."""
    keys = dict.fromkeys(key for record in metrics for key in record)
    columns = {}
    for key in keys:
        values = [_finite(record.get(key)) for record in metrics]
        columns[key] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)  # [S]
    return columns


def last_finite(column: np.ndarray | None) -> float | None:
    """The last finite value of a column (None when there is none)."""
    if column is None:
        return None
    finite = column[np.isfinite(column)]
    return float(finite[-1]) if finite.size else None


# --- plots --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """One plot of metrics over steps: which keys it draws (with legend labels) and how."""

    id: str
    title: str
    ylabel: str
    series: tuple[tuple[str, str], ...]
    style: Literal["lines", "band", "stacked"] = "lines"
    """lines: one line per key; band: first key ± second key (mean ± std); stacked: stacked areas
    of all keys but the last, which is drawn as a line on top (parts of a total)."""
    methods: tuple[str, ...] | None = None
    """The training methods that record these metrics (None: every method); a run of another
    method neither draws the panel nor lists its metrics as missing."""


REWARD_FUNCTION_KEY = re.compile(r"^reward/(?P<name>.+)/mean$")
TIME_PARTS = (
    ("time/rollout_s", "rollout"), ("time/reward_s", "reward"), ("time/logprob_s", "log-probs"), ("time/train_s", "train"),
)


ONLINE = ("grpo", "ppo", "online_rft")
SCORED = ONLINE + ("rft", "dpo")


def metric_panels(keys: set[str], method: str | None = None) -> list[Panel]:
    """The panels of the report for a run of ``method`` (None: all), in page order (reward
    functions found among ``keys``)."""
    reward_functions = tuple(
        (key, match["name"]) for key in sorted(keys) if (match := REWARD_FUNCTION_KEY.match(key))
    )
    panels = [
        Panel("reward", "Reward (mean ± std over the batch)", "reward",
              (("reward/mean", "mean"), ("reward/std", "std")), "band", SCORED),
        Panel("reward-functions", "Reward by function (mean)", "reward", reward_functions, methods=SCORED),
        Panel("accuracy", "Accuracy (correct samples)", "fraction", (("accuracy", "accuracy"),), methods=SCORED),
        Panel("kl", "KL to the reference model", "KL", (("kl", "kl"),), methods=("grpo", "ppo")),
        Panel("dpo-rewards", "DPO implicit rewards (beta x log-ratio, mean over pairs)", "reward",
              (("dpo/reward_chosen", "chosen"), ("dpo/reward_rejected", "rejected"), ("dpo/margin", "margin")), methods=("dpo",)),
        Panel("dpo-accuracy", "DPO preference accuracy (margin > 0)", "fraction", (("dpo/accuracy", "accuracy"),), methods=("dpo",)),
        Panel("value-loss", "Value model: clipped value loss", "loss", (("value/loss", "value loss"),), methods=("ppo",)),
        Panel("value-fit", "Value model: explained variance of the returns", "fraction",
              (("value/explained_variance", "explained variance"),), methods=("ppo",)),
        Panel("kl-in-reward", "KL penalty in the reward (beta x KL, per sequence)", "reward",
              (("kl_in_reward", "beta x KL"),), methods=("ppo",)),
        Panel("kept-frac", "Samples kept (correct, deduplicated)", "fraction", (("rft/kept_frac", "kept"),),
              methods=("rft", "online_rft")),
        Panel("nll", "Negative log-likelihood of the kept / target tokens", "nats / token", (("nll", "nll"),),
              methods=("sft", "rft", "online_rft")),
        Panel("entropy", "Policy entropy", "nats / token", (("entropy", "entropy"),)),
        Panel("clip-frac", "Clipped fraction of tokens", "fraction",
              (("clip_frac/low", "low (ratio < 1-ε)"), ("clip_frac/high", "high (ratio > 1+ε)")), methods=("grpo", "ppo")),
        Panel("completion-len", "Completion length", "tokens",
              (("completion_len/mean", "mean"), ("completion_len/max", "max"))),
        Panel("length-by-correctness", "Completion length of correct and wrong samples", "tokens",
              (("completion_len/correct_mean", "correct"), ("completion_len/wrong_mean", "wrong")), methods=SCORED),
        Panel("truncated-frac", "Truncated completions (hit max_new_tokens)", "fraction", (("truncated_frac", "truncated"),),
              methods=ONLINE),
        Panel("frac-zero-std", "Groups with zero reward std (no signal)", "fraction", (("frac_zero_std", "zero-std groups"),),
              methods=("grpo",)),
        Panel("step-time", "Step time by phase", "seconds", (*TIME_PARTS, ("time/step_s", "step total")), "stacked"),
        Panel("tokens-per-s", "Throughput", "completion tokens / s", (("tokens_per_s", "tokens/s"),)),
        Panel("loss", "Loss", "loss", (("loss", "loss"),)),
        Panel("grad-norm", "Gradient norm (before clipping)", "norm",
              (("grad_norm", "policy"), ("value/grad_norm", "value model"))),
        Panel("lr", "Learning rate", "lr", (("lr", "lr"),)),
    ]
    return [panel for panel in panels if method is None or panel.methods is None or method in panel.methods]


@dataclass(frozen=True)
class Plot:
    """A rendered panel: a PNG and what the page says about it."""

    id: str
    title: str
    alt: str
    metrics: tuple[str, ...]
    png: bytes
    width: int
    height: int

    @property
    def data_uri(self) -> str:
        """The PNG inline, for an ``<img src>`` that needs no file or network."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Omission:
    """A metric the page does not plot, and why."""

    key: str
    reason: str


def _new_axes() -> tuple[Figure, Any]:
    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.grid(True, alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _png(figure: Figure) -> tuple[bytes, int, int]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    width, height = (round(v * FIGURE_DPI) for v in figure.get_size_inches())
    return buffer.getvalue(), width, height


def _line(axes: Any, steps: np.ndarray, values: np.ndarray, label: str, color: str, **style: Any) -> None:
    marker = "o" if np.isfinite(values).sum() <= SMALL_SERIES else None
    axes.plot(steps, values, label=label, color=color, marker=marker, markersize=3, linewidth=1.4, **style)


def _iteration_boundaries(steps: np.ndarray, columns: dict[str, np.ndarray]) -> list[float]:
    """Steps after which iterative RL moved to its next iteration (where the ``iteration`` metric changes)."""
    iteration = columns.get("iteration")
    if iteration is None:
        return []
    changes = np.flatnonzero(np.diff(iteration) > 0)  # index i: iteration rose between steps i and i+1
    return [float(steps[i]) + 0.5 for i in changes]


def render_panel(panel: Panel, steps: np.ndarray, columns: dict[str, np.ndarray]) -> Plot | None:
    """Draw one panel from the metric columns; None when none of its keys has a finite value."""
    present = [(key, label) for key, label in panel.series if key in columns and np.isfinite(columns[key]).any()]
    if not present or (panel.style == "band" and present[0][0] != panel.series[0][0]):
        return None
    figure, axes = _new_axes()
    if panel.style == "band":
        (mean_key, mean_label), *rest = present
        mean = columns[mean_key]
        _line(axes, steps, mean, mean_label, COLORS[0])
        if rest:
            std = columns[rest[0][0]]
            axes.fill_between(steps, mean - std, mean + std, color=COLORS[0], alpha=0.2, linewidth=0, label="± std")
    elif panel.style == "stacked":
        total_key = panel.series[-1][0]
        parts = [(key, label) for key, label in present if key != total_key]
        if parts:
            stack = np.nan_to_num(np.stack([columns[key] for key, _ in parts]))  # [parts, S]
            axes.stackplot(steps, stack, labels=[label for _, label in parts], colors=COLORS[: len(parts)], alpha=0.75)
        if any(key == total_key for key, _ in present):
            _line(axes, steps, columns[total_key], dict(panel.series)[total_key], "black", linestyle="--")
    else:
        for index, (key, label) in enumerate(present):
            _line(axes, steps, columns[key], label, COLORS[index % len(COLORS)])
    for boundary in _iteration_boundaries(steps, columns):
        axes.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    axes.set_title(panel.title, fontsize=11)
    axes.set_xlabel("step")
    axes.set_ylabel(panel.ylabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(present) > 1 or panel.style != "lines":
        axes.legend(fontsize=8, loc="best")
    png, width, height = _png(figure)
    last = ", ".join(f"{label} {format_number(last_finite(columns[key]))}" for key, label in present)
    alt = f"{panel.title} over steps {int(steps[0])}–{int(steps[-1])}; last values: {last}"
    return Plot(panel.id, panel.title, alt, tuple(key for key, _ in present), png, width, height)


def render_metric_plots(metrics: list[dict[str, Any]], method: str | None = None) -> tuple[list[Plot], list[Omission]]:
    """All metric panels of ``method`` that have data, and the expected metrics that were left out (and why)."""
    columns = metric_columns(metrics)
    steps = columns.pop("step")  # [S]
    plots, omissions = [], []
    for panel in metric_panels(set(columns), method):
        plot = render_panel(panel, steps, columns)
        if plot is not None:
            plots.append(plot)
        drawn = set(plot.metrics) if plot else set()
        for key, _ in panel.series:
            if key in drawn:
                continue
            reason = "not recorded in this run" if key not in columns else "recorded, but every value is null"
            if plot is None and panel.style == "band" and key != panel.series[0][0]:
                reason = f"not drawn without {panel.series[0][0]}"
            omissions.append(Omission(key, reason))
    if not any(REWARD_FUNCTION_KEY.match(key) for key in columns) and (method is None or method in SCORED):
        omissions.append(Omission("reward/<name>/mean", "no per-function rewards recorded"))
    return plots, omissions


def _curve(summary: dict[str, Any] | None, name: str) -> list[tuple[int, float]]:
    """The (k, value) points of ``pass_at_k`` or ``maj_at_k`` in an eval summary, sorted by k."""
    table = (summary or {}).get(name)
    if not isinstance(table, dict):
        return []
    points = []
    for k, value in table.items():
        number = _finite(value)
        if str(k).isdigit() and int(k) >= 1 and number is not None:
            points.append((int(k), number))
    return sorted(points)


def render_eval_plot(before: dict[str, Any] | None, after: dict[str, Any] | None) -> Plot | None:
    """pass@k and maj@k against k (log2 axis), before and after training; None without eval data."""
    curves = [
        (label, name, summary)
        for label, summary in (("before", before), ("after", after))
        for name in ("pass_at_k", "maj_at_k")
    ]
    drawn = [(label, name, points) for label, name, summary in curves if (points := _curve(summary, name))]
    if not drawn:
        return None
    figure, axes = _new_axes()
    colors = {"before": COLORS[7], "after": COLORS[0]}
    for label, name, points in drawn:
        ks, values = zip(*points)
        kind = "pass@k" if name == "pass_at_k" else "maj@k"
        style = "-" if name == "pass_at_k" else "--"
        axes.plot(ks, values, style, marker="o", markersize=4, color=colors[label], label=f"{kind} {label}")
    all_ks = sorted({k for _, _, points in drawn for k, _ in points})
    axes.set_xscale("log", base=2)
    axes.set_xlim(all_ks[0] / 1.5, all_ks[-1] * 1.5)
    axes.xaxis.set_major_locator(FixedLocator(all_ks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([str(k) for k in all_ks])
    axes.set_ylim(-0.02, 1.02)
    axes.set_title("Held-out pass@k and maj@k", fontsize=11)
    axes.set_xlabel("k (samples per problem)")
    axes.set_ylabel("fraction of problems")
    axes.legend(fontsize=8, loc="best")
    png, width, height = _png(figure)
    described = "; ".join(
        f"{'pass' if name == 'pass_at_k' else 'maj'}@k {label}: "
        + ", ".join(f"k={k} {format_number(v)}" for k, v in points)
        for label, name, points in drawn
    )
    return Plot("eval-pass-maj", "Held-out pass@k and maj@k", described, ("pass_at_k", "maj_at_k"), png, width, height)


# --- tables -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRow:
    """One row of the before/after table (values already formatted)."""

    metric: str
    before: str
    after: str
    change: str


def eval_rows(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[EvalRow]:
    """Greedy accuracy, every pass@k and maj@k, mean reward, mean length, truncation rate."""
    readers: list[tuple[str, Any]] = [("greedy accuracy", lambda s: s.get("greedy_accuracy"))]
    for name, prefix in (("pass_at_k", "pass"), ("maj_at_k", "maj")):
        ks = sorted({k for summary in (before, after) for k, _ in _curve(summary, name)})
        readers += [(f"{prefix}@{k}", lambda s, k=k, name=name: dict(_curve(s, name)).get(k)) for k in ks]
    readers += [
        ("mean reward", lambda s: s.get("mean_reward")),
        ("mean length", lambda s: s.get("mean_length")),
        ("truncation rate", lambda s: s.get("truncation_rate")),
    ]
    rows = []
    for label, read in readers:
        b = _finite(read(before)) if before is not None else None
        a = _finite(read(after)) if after is not None else None
        change = format_number(a - b, signed=True) if a is not None and b is not None else "—"
        rows.append(EvalRow(label, format_number(b), format_number(a), change))
    return rows


def eval_setup(label: str, summary: dict[str, Any] | None) -> str | None:
    """'before: 6 problems, 4 samples each at temperature 1' (None without that evaluation)."""
    if summary is None:
        return None
    return (
        f"{label}: {format_number(summary.get('num_problems'))} problems, "
        f"{format_number(summary.get('num_samples'))} samples each at temperature {format_number(summary.get('temperature'))}"
    )


@dataclass(frozen=True)
class CompletionRow:
    """One sampled completion, ready to show (texts are escaped by the template)."""

    step: str
    group: str
    prompt: str
    completion: str
    reward: str
    rewards: str
    advantage: str
    length: str
    finish_reason: str


def _clip_text(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + f"\n… ({len(text) - MAX_TEXT_CHARS} more characters in completions.jsonl)"


def prompt_text(prompt: Any) -> str:
    """A prompt as text: a string as is, chat messages as 'role: content' lines, anything else as JSON."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)
    return json.dumps(prompt, ensure_ascii=False)


def completion_rows(records: list[dict[str, Any]]) -> list[CompletionRow]:
    """Table rows for sampled completion records (missing fields show as '—')."""
    rows = []
    for record in records:
        rewards = record.get("rewards")
        per_function = (
            ", ".join(f"{name} {format_number(value)}" for name, value in rewards.items()) if isinstance(rewards, dict) else "—"
        )
        completion = record.get("completion")
        rows.append(
            CompletionRow(
                step=format_number(record.get("step")),
                group=format_number(record.get("group")),
                prompt=_clip_text(prompt_text(record.get("prompt", ""))),
                completion=_clip_text(completion if isinstance(completion, str) else prompt_text(completion)),
                reward=format_number(record.get("reward")),
                rewards=per_function,
                advantage=format_number(record.get("advantage")),
                length=format_number(record.get("length")),
                finish_reason=str(record.get("finish_reason") or "—"),
            )
        )
    return rows


# --- the page -----------------------------------------------------------------------------------------


@dataclass
class Headline:
    """A labelled number in the page header; ``id`` lets tools find it."""

    id: str
    label: str
    value: str


@dataclass
class ReportPage:
    """Everything the HTML template shows."""

    title: str
    generated: str
    info: list[tuple[str, str]]
    headlines: list[Headline]
    plots: list[Plot]
    omissions: list[Omission]
    eval_plot: Plot | None
    eval_rows: list[EvalRow]
    eval_setups: list[str]
    completions: list[CompletionRow]
    completions_note: str
    config_text: str | None
    iterations: list[dict[str, str]] = ()


def _section(config: dict[str, Any] | None, section: str) -> dict[str, Any]:
    value = (config or {}).get(section)
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def _before_after(before: dict[str, Any] | None, after: dict[str, Any] | None, read: Any) -> str:
    b = format_number(read(before)) if before is not None else "—"
    a = format_number(read(after)) if after is not None else "—"
    return f"{b} → {a}"


def build_page(run: RunData) -> ReportPage:
    """Turn run data into the page's plots, tables and formatted numbers."""
    columns = metric_columns(run.metrics)
    last = run.metrics[-1]
    steps_done = last["step"]
    train = _section(run.config, "train")
    planned = _finite(train.get("steps"))
    if planned is None:
        progress = f"{steps_done}"
    else:
        status = "all done" if steps_done >= planned else "in progress or stopped"
        progress = f"{steps_done} / {int(planned)} ({status})"
    step_times = columns.get("time/step_s")
    wall = float(np.nansum(step_times)) if step_times is not None and np.isfinite(step_times).any() else None
    info = [
        ("run directory", str(run.root)),
        ("model", _text(_section(run.config, "model").get("path"))),
        ("task", _text(_section(run.config, "data").get("task"))),
        ("method", _text(_section(run.config, "algorithm").get("method", "grpo"))),
        ("preset", _text(_section(run.config, "algorithm").get("preset"))),
        ("steps", progress),
        ("training time", f"{format_duration(wall)} (sum of step times)"),
    ]
    reward = columns.get("reward/mean")
    recent = reward[-10:] if reward is not None else None
    headlines = [
        Headline("headline-reward", f"reward at step {steps_done}", format_number(last.get("reward/mean"))),
        Headline(
            "headline-reward-recent",
            f"reward, mean of the last {len(recent) if recent is not None else 0} steps",
            format_number(float(np.nanmean(recent)) if recent is not None and np.isfinite(recent).any() else None),
        ),
        Headline("headline-accuracy", "accuracy (last recorded)", format_number(last_finite(columns.get("accuracy")))),
    ]
    if run.eval_before is not None or run.eval_after is not None:
        headlines += [
            Headline("headline-greedy", "greedy accuracy before → after",
                     _before_after(run.eval_before, run.eval_after, lambda s: s.get("greedy_accuracy"))),
            Headline("headline-pass1", "pass@1 before → after",
                     _before_after(run.eval_before, run.eval_after, lambda s: dict(_curve(s, "pass_at_k")).get(1))),
        ]
    plots, omissions = render_metric_plots(run.metrics, _section(run.config, "algorithm").get("method", "grpo") if run.config else None)
    has_eval = run.eval_before is not None or run.eval_after is not None
    shown = len(run.completions)
    return ReportPage(
        title=f"cohort run: {run.root.name or run.root}",
        generated=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        info=info,
        headlines=headlines,
        plots=plots,
        omissions=omissions,
        eval_plot=render_eval_plot(run.eval_before, run.eval_after) if has_eval else None,
        eval_rows=eval_rows(run.eval_before, run.eval_after) if has_eval else [],
        eval_setups=[s for s in (eval_setup("before", run.eval_before), eval_setup("after", run.eval_after)) if s],
        completions=completion_rows(run.completions),
        completions_note=f"the latest {shown} sampled completions, latest step first" if shown else "",
        iterations=[{key: format_number(value) if isinstance(value, float) else str(value) for key, value in record.items()}
                    for record in run.iterations],
        config_text=run.config_text,
    )


PAGE_TEMPLATE = """<!DOCTYPE html>
{%- macro plot_image(plot) -%}
<figure><img id="plot-{{ plot.id }}" data-metric="{{ plot.id }}" data-series="{{ plot.metrics | join(' ') }}"
  width="{{ plot.width }}" height="{{ plot.height }}" alt="{{ plot.alt }}" src="{{ plot.data_uri }}"></figure>
{%- endmacro %}
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{{ page.title }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0 auto;
         max-width: 1340px; padding: 16px 24px 48px; color: #1d1d1f; background: #fff; font-size: 14px; }
  h1 { font-size: 22px; margin: 8px 0 4px; }
  h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
  nav a { margin-right: 14px; }
  .muted { color: #666; }
  table { border-collapse: collapse; }
  th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
  th { background: #f6f6f6; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .headlines { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
  .headline { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
  .headline .value { font-size: 20px; font-weight: 600; }
  .headline .label { color: #666; font-size: 12px; }
  .plots { display: flex; flex-wrap: wrap; gap: 12px; }
  figure { margin: 0; }
  img { max-width: 100%; height: auto; border: 1px solid #eee; }
  pre, .text { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; white-space: pre-wrap;
               word-break: break-word; margin: 0; }
  .text { max-height: 14em; overflow: auto; max-width: 520px; }
  pre.config { background: #f8f8f8; padding: 12px; border: 1px solid #eee; max-height: 40em; overflow: auto; }
</style>
</head>
<body>
<h1>{{ page.title }}</h1>
<div class="muted">report generated {{ page.generated }} by cohort</div>
<nav><a href="#curves">curves</a> <a href="#evaluation">evaluation</a> <a href="#completions">completions</a>
  <a href="#config">config</a></nav>

<table id="run-info">
{%- for label, value in page.info %}
<tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{%- endfor %}
</table>
<div class="headlines">
{%- for h in page.headlines %}
<div class="headline"><div class="value" id="{{ h.id }}">{{ h.value }}</div><div class="label">{{ h.label }}</div></div>
{%- endfor %}
</div>

<h2 id="curves">Training curves</h2>
<div class="plots">
{%- for plot in page.plots %}
{{ plot_image(plot) }}
{%- endfor %}
</div>
{%- if page.omissions %}
<p id="omitted" class="muted">Not plotted:
{%- for o in page.omissions %}
<span data-metric="{{ o.key }}"><code>{{ o.key }}</code> ({{ o.reason }})</span>{{ "." if loop.last else ";" }}
{%- endfor %}
</p>
{%- endif %}

{%- if page.iterations %}
<h2 id="iterations">Iterative RL: the reward model of each iteration</h2>
<p class="muted">Iteration 0 is the reward model the first policy iteration trained with (unless one was given);
iteration K's was retrained on the policy's samples after K policy iterations, with a replay share of earlier data.
The dashed lines in the curves above mark the iteration boundaries.</p>
<table id="iterations-table">
<tr><th>iteration</th><th>kind</th><th>training examples</th><th>held-out accuracy</th><th>held-out AUC</th></tr>
{%- for row in page.iterations %}
<tr><td class="num">{{ row.iteration }}</td><td>{{ row.kind }}</td><td class="num">{{ row.examples }}</td>
  <td class="num">{{ row.accuracy }}</td><td class="num">{{ row.auc }}</td></tr>
{%- endfor %}
</table>
{%- endif %}

<h2 id="evaluation">Held-out evaluation</h2>
{%- if page.eval_rows %}
<p class="muted">{{ page.eval_setups | join("; ") }}</p>
<table id="eval-table">
<tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>
{%- for row in page.eval_rows %}
<tr data-metric="{{ row.metric }}"><th>{{ row.metric }}</th><td class="num" data-col="before">{{ row.before }}</td>
  <td class="num" data-col="after">{{ row.after }}</td><td class="num" data-col="change">{{ row.change }}</td></tr>
{%- endfor %}
</table>
{%- if page.eval_plot %}
{{ plot_image(page.eval_plot) }}
{%- endif %}
{%- else %}
<p class="muted" id="no-eval">No evaluation in this run (no eval_before.json or eval_after.json).</p>
{%- endif %}

<h2 id="completions">Sampled completions</h2>
{%- if page.completions %}
<p class="muted">{{ page.completions_note }}</p>
<table id="completions-table">
<tr><th>step</th><th>group</th><th>prompt</th><th>completion</th><th>reward</th><th>by function</th><th>advantage</th>
  <th>length</th><th>finish</th></tr>
{%- for row in page.completions %}
<tr data-step="{{ row.step }}"><td class="num">{{ row.step }}</td><td class="num">{{ row.group }}</td>
  <td><div class="text prompt">{{ row.prompt }}</div></td><td><div class="text completion">{{ row.completion }}</div></td>
  <td class="num reward">{{ row.reward }}</td><td class="muted rewards">{{ row.rewards }}</td>
  <td class="num advantage">{{ row.advantage }}</td><td class="num">{{ row.length }}</td><td>{{ row.finish_reason }}</td></tr>
{%- endfor %}
</table>
{%- else %}
<p class="muted" id="no-completions">No sampled completions recorded (completions.jsonl is missing or empty;
  see log.completions_every).</p>
{%- endif %}

<h2 id="config">Resolved config</h2>
{%- if page.config_text is not none %}
<pre class="config" id="config-yaml">{{ page.config_text }}</pre>
{%- else %}
<p class="muted" id="no-config">No config.yaml in the run directory.</p>
{%- endif %}
</body>
</html>
"""

_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_TEMPLATE = _ENVIRONMENT.from_string(PAGE_TEMPLATE)


def render_html(run: RunData) -> str:
    """The report page of ``run`` as one self-contained HTML string."""
    return _TEMPLATE.render(page=build_page(run))


def write_report(run_dir: Path, out_path: Path | None = None) -> Path:
    """Write the HTML report of ``run_dir`` (default ``run_dir/report.html``) atomically; return its path."""
    run = load_run(Path(run_dir))
    destination = Path(out_path) if out_path is not None else RunDirectory(run.root).report
    html = render_html(run)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(html)
        os.chmod(temporary, 0o644)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return destination
