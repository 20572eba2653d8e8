"""Reading a run directory for the report: metrics.jsonl (required), and config.yaml,
completions.jsonl, eval_before.json, eval_after.json and the iterations' reward-model reports when
they exist. A file that is not what the contract says raises ReportError naming the file and line."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cohort.run_directory import RunDirectory

MAX_COMPLETIONS = 50
"""Sampled completions shown in the table (the latest ones)."""


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
