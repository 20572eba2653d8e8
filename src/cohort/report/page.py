"""The report page: headline numbers, the figures, the evaluation table, the sampled completions and
the config, rendered through ``page.html.j2`` (self-contained: inline CSS, PNG data URIs, no scripts;
all text from the run is HTML-escaped by the template engine) and written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from cohort.methods import METHODS
from cohort.report.figures import (
    Omission,
    Plot,
    _curve,
    finite_number,
    format_duration,
    format_number,
    last_finite,
    metric_columns,
    render_eval_plot,
    render_metric_plots,
)
from cohort.report.run_data import RunData, load_run
from cohort.run_directory import RunDirectory

MAX_TEXT_CHARS = 20_000
"""A prompt or completion longer than this is cut (the page stays small; the file has it all)."""


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
        b = finite_number(read(before)) if before is not None else None
        a = finite_number(read(after)) if after is not None else None
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


def _reads_preset(config: dict[str, Any] | None) -> bool:
    """Whether the run's method uses algorithm.preset (a PPO run's page does not say "preset grpo")."""
    method = method_of(config)
    return method is None or method.reads_key("algorithm.preset")


def method_of(config: dict[str, Any] | None) -> type | None:
    """The method class a run's config names (None: no config, or a method this cohort does not know)."""
    if config is None:
        return None
    name = _section(config, "algorithm").get("method", "grpo")
    return METHODS.get(name) if name in METHODS else None


def build_page(run: RunData) -> ReportPage:
    """Turn run data into the page's plots, tables and formatted numbers."""
    columns = metric_columns(run.metrics)
    last = run.metrics[-1]
    steps_done = last["step"]
    train = _section(run.config, "train")
    planned = finite_number(train.get("steps"))
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
        *([("preset", _text(_section(run.config, "algorithm").get("preset")))] if _reads_preset(run.config) else []),
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
    plots, omissions = render_metric_plots(run.metrics, method_of(run.config))
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


_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_TEMPLATE = _ENVIRONMENT.from_string((Path(__file__).with_name("page.html.j2")).read_text(encoding="utf-8"))


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
