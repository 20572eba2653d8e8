"""``cohort eval``: evaluate one or more models on a task's held-out split and compare them.

With two models the table shows both and the difference (the before/after view of DeepSeekMath
Figure 7: RL tends to raise maj@k more than pass@k).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from cohort.assets import BUILTIN_CONFIGS, DEMO_CONFIG, resolve_builtin, resolve_config
from cohort.config import Config, load_config
from cohort.data.tasks import task_from_settings
from cohort.evaluation.evaluate import default_ks
from cohort.evaluation.held_out import evaluate_held_out, held_out_rows, write_eval
from cohort.models import quiet_transformers
from cohort.models.loading import load_policy, load_tokenizer, resolve_device
from cohort.rollout.engines import build_engine, check_engine
from cohort.monitoring.console import comparison_table
from cohort.records import dumps
from cohort.rewards.configured import run_rewards
from cohort.run_directory import RunDirectory


@dataclass(frozen=True)
class ModelSource:
    """What the user named and the model directory it resolves to."""

    label: str
    path: str
    run_config: Path | None = None


def resolve_model_argument(argument: str) -> ModelSource:
    """A model directory, ``builtin:demo``, a checkpoint, or a run directory (its final/ or latest checkpoint)."""
    path = Path(argument)
    run = RunDirectory(path)
    if path.is_dir() and run.config.is_file() and (run.final.is_dir() or run.latest_checkpoint() is not None):
        model = run.final if run.final.is_dir() else run.latest_checkpoint()
        return ModelSource(argument, str(model), run.config)
    return ModelSource(argument, resolve_builtin(argument))


def _base_config(config_path: str | None, sources: list[ModelSource], overrides: list[str]) -> Config:
    """--config, else the first run directory's config, else the demo's (as a base under the overrides)."""
    if config_path:
        path = resolve_config(config_path)
        if path in BUILTIN_CONFIGS.values():
            return load_config(None, overrides, base=yaml.safe_load(path.read_text()))
        return load_config(path, overrides)
    run_config = next((s.run_config for s in sources if s.run_config), None)
    if run_config is not None:
        return load_config(run_config, overrides)
    return load_config(None, overrides, base=yaml.safe_load(DEMO_CONFIG.read_text()))


def _output_directory(out: str | None, sources: list[ModelSource]) -> Path:
    """--out, else RUN_DIR/eval of the first model when it is a run directory, else runs/eval."""
    if out:
        return Path(out)
    return Path(sources[0].label) / "eval" if sources[0].run_config else Path("runs") / "eval"


def run_eval(
    models: list[str],
    overrides: list[str],
    *,
    config_path: str | None = None,
    samples: int | None = None,
    ks: list[int] | None = None,
    limit: int | None = None,
    out: str | None = None,
) -> int:
    """Evaluate each model with one shared task, reward set, sampling settings and seed."""
    if not models:
        raise ValueError("name at least one model directory, builtin:demo, or run directory")
    sources = [resolve_model_argument(m) for m in models]
    config = _base_config(config_path, sources, overrides + ([f"data.eval_limit={limit}"] if limit else []))
    num_samples = samples or config.train.eval_samples
    ks = ks or default_ks(num_samples)
    if min(ks) < 1 or max(ks) > num_samples:  # before any model loads
        raise ValueError(f"--k {','.join(map(str, ks))}: every k must lie in 1..{num_samples}, the samples per problem "
                         f"(raise --samples to {max(ks)}, or drop the larger k)")
    task = task_from_settings(config.data, config.train.seed)
    held_out_rows(task, config.data.eval_limit)  # a task without a held-out split fails before any model loads
    rewards = run_rewards(config, task)
    device = resolve_device(config.model.device)
    for source in sources:
        check_engine(config.rollout, source.path, device, config.model.trust_remote_code)
    out_dir = _output_directory(out, sources)
    quiet_transformers()
    out_dir.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    summaries = []
    for index, source in enumerate(sources):
        model = load_policy(source.path, dtype=config.model.dtype, device=device, trust_remote_code=config.model.trust_remote_code)
        tokenizer = load_tokenizer(source.path, trust_remote_code=config.model.trust_remote_code)
        engine = build_engine(config.rollout, source.path, dtype=next(model.parameters()).dtype, device=device,
                              trust_remote_code=config.model.trust_remote_code)
        with Progress(
            TextColumn(f"[bold]eval {source.label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
        ) as progress:
            task_id = progress.add_task("eval", total=None)
            summary, problems = evaluate_held_out(
                config, task, model, tokenizer, rewards, num_samples=num_samples, ks=ks,
                on_progress=lambda done, total: progress.update(task_id, completed=done, total=total), engine=engine,
            )
        write_eval(summary, problems, out_dir / f"summary_{index}.json", out_dir / f"problems_{index}.jsonl")
        summaries.append(summary)
        del model
    record = {
        "task": config.data.task,
        "models": [{"label": s.label, "path": s.path, "summary": summary.to_dict()} for s, summary in zip(sources, summaries)],
    }
    (out_dir / "summary.json").write_text(dumps(record, indent=2))
    Console().print(comparison_table([s.label for s in sources], summaries))
    console.print(f"written to {out_dir}/summary.json (per-problem results in problems_<i>.jsonl)")
    return 0
