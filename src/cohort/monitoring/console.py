"""What a person sees of a run: the console (progress, status lines, tables) and the run's log file.

Console modes: ``rich`` (live progress bar with ETA and the key metrics), ``plain`` (one line per
step), ``json`` (one JSON object per step on stdout, nothing else there) and ``quiet`` (only the
final summary). Log messages go to stderr in every mode. ``silent`` (errors only) is what the
ranks other than 0 of a torchrun job use.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cohort.records import dumps

if TYPE_CHECKING:
    from cohort.evaluation.evaluate import EvalSummary

logger = logging.getLogger("cohort")

KEY_METRICS = (("reward", "reward/mean"), ("acc", "accuracy"), ("kl", "kl"), ("len", "completion_len/mean"))
"""What the progress line shows of a method that samples its policy (its reward is the policy's)."""
FIXED_DATA_KEY_METRICS = (("loss", "loss"), ("nll", "nll"), ("len", "completion_len/mean"))
"""... and of one that trains on fixed data (rows, kept samples, pairs: their reward says nothing of the policy)."""


def _format_number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


class RunConsole:
    """Progress and messages for one run, in the chosen console mode."""

    def __init__(self, mode: str, total_steps: int, start_step: int = 0) -> None:
        if mode not in ("rich", "plain", "json", "quiet", "silent"):
            raise ValueError(f"console mode must be rich, plain, json or quiet, got {mode!r}")
        self.mode = mode
        self.key_metrics = KEY_METRICS
        self.total_steps = total_steps
        self.start_step = start_step
        self.err = Console(stderr=True)
        self.out = Console()
        self._progress: Progress | None = None
        self._task = None
        self._started = time.monotonic()
        handler: logging.Handler = RichHandler(console=self.err, show_path=False) if mode == "rich" else logging.StreamHandler(sys.stderr)
        if mode != "rich":
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO if mode in ("rich", "plain") else logging.ERROR if mode == "silent" else logging.WARNING)
        for previous in logger.handlers:  # a console that was never stopped: release its run.log
            if isinstance(previous, logging.FileHandler):
                previous.close()
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self._log_file: logging.Handler | None = None

    def attach_log_file(self, path: Path) -> None:
        """Also append status lines and warnings (every mode) to ``path``, the run's log."""
        self.detach_log_file()
        self._log_file = logging.FileHandler(path, encoding="utf-8")
        self._log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._log_file.setLevel(logging.INFO)
        logger.addHandler(self._log_file)

    def detach_log_file(self) -> None:
        if self._log_file is not None:
            logger.removeHandler(self._log_file)
            self._log_file.close()
            self._log_file = None

    def info(self, message: str) -> None:
        """A status line on stderr (rich and plain modes) and in the run's log file."""
        if self.mode == "rich":
            self.err.print(message, highlight=False)
        elif self.mode == "plain":
            print(message, file=sys.stderr, flush=True)
        if self._log_file is not None:
            self._log_file.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None))

    def result(self, message: str) -> None:
        """A closing line on stdout (every mode but json, whose stdout holds JSON only, and silent)."""
        if self.mode not in ("json", "silent"):
            self.out.print(message, highlight=False)

    def start(self) -> None:
        if self.mode != "rich":
            return
        self._progress = Progress(
            BarColumn(bar_width=12),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.err,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=self.total_steps, completed=self.start_step, metrics="")

    def _summary_line(self, metrics: Mapping[str, Any]) -> str:
        parts = [
            f"{label} {_format_number(metrics[key])}"
            for label, key in self.key_metrics
            if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key])
        ]
        return " | ".join(parts)

    def step(self, metrics: Mapping[str, Any]) -> None:
        step = int(metrics["step"])
        if self.mode == "json":
            print(dumps({"event": "step", **metrics}), flush=True)
        elif self.mode == "plain":
            elapsed = time.monotonic() - self._started
            done = step - self.start_step
            eta = elapsed / done * (self.total_steps - step) if done else float("nan")
            print(
                f"step {step}/{self.total_steps} | {self._summary_line(metrics)} | "
                f"{_format_number(metrics.get('time/step_s'))}s/step | eta {_format_number(eta)}s",
                flush=True,
            )
        elif self.mode == "rich" and self._progress is not None:
            self._progress.update(self._task, completed=step, metrics=self._summary_line(metrics))

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    @contextlib.contextmanager
    def progress(self, description: str) -> Iterator[Callable[[int, int], None]]:
        """Within: ``update(done, total)`` shows the progress of a long phase (evaluation, offline
        sampling): a bar with elapsed time and ETA (rich), a line at every quarter (plain), nothing
        in the json, quiet and silent modes."""
        if self.mode == "rich":
            columns = (TextColumn(description), BarColumn(bar_width=12), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("eta"), TimeRemainingColumn())
            with Progress(*columns, console=self.err, transient=True) as bar:
                task = bar.add_task(description, total=None)
                yield lambda done, total: bar.update(task, completed=done, total=total)
            return
        shown = [-1]

        def plain(done: int, total: int) -> None:
            quarter = 4 * done // max(1, total)
            if self.mode == "plain" and quarter > shown[0]:
                shown[0] = quarter
                print(f"{description}: {done}/{total}", file=sys.stderr, flush=True)

        yield plain

    def event(self, name: str, payload: Mapping[str, Any]) -> None:
        """A non-step record (evaluation, summary): a JSON line in json mode."""
        if self.mode == "json":
            print(dumps({"event": name, **payload}), flush=True)

    def summary(self, summary: Mapping[str, Any], before: EvalSummary | None, after: EvalSummary | None) -> None:
        """The end of a run: the summary event (json mode), the before/after table, and one closing line."""
        self.event("summary", summary)
        labelled = [(label, s) for label, s in (("before", before), ("after", after)) if s is not None]
        if labelled:
            self.table(comparison_table([label for label, _ in labelled], [s for _, s in labelled]))
        steps, done = summary["steps"], summary["steps_this_run"]
        if "stopped_by" in summary:
            head = f"stopped early by a signal after {steps} steps; "
        elif done == 0:
            self.result(f"nothing to train: the run is at step {steps} of train.steps={steps} (raise train.steps to go on); "
                        f"run directory: {summary['out_dir']}")
            return
        else:
            head = ""
        if done:
            head += (f"trained {done} steps in {summary['steps_seconds']:.1f} s (median step {summary['median_step_s']:.3f} s; "
                     f"{summary['train_seconds']:.1f} s with checkpoints and evaluations); ")
        self.result(f"{head}run directory: {summary['out_dir']}")

    def table(self, table: Table) -> None:
        """A table on stdout (all modes but json and silent)."""
        if self.mode not in ("json", "silent"):
            self.out.print(table)


def _eval_rows(summaries: list[EvalSummary]) -> list[tuple[str, list[float]]]:
    first = summaries[0]
    rows = [("greedy accuracy", [s.greedy_accuracy for s in summaries])]
    rows += [(f"pass@{k}", [s.pass_at_k[k] for s in summaries]) for k in first.pass_at_k]
    rows += [(f"maj@{k}", [s.maj_at_k[k] for s in summaries]) for k in first.maj_at_k]
    rows += [
        ("mean reward", [s.mean_reward for s in summaries]),
        ("mean length", [s.mean_length for s in summaries]),
        ("truncation rate", [s.truncation_rate for s in summaries]),
    ]
    return rows


def comparison_table(labels: list[str], summaries: list[EvalSummary]) -> Table:
    """Metrics by model; with exactly two models, a last column with the change (second - first)."""
    first = summaries[0]
    table = Table(
        title=f"held-out: {first.num_problems} problems x {first.num_samples} samples, T={first.temperature:g}",
        title_justify="left",
    )
    table.add_column("metric")
    for label in labels:
        table.add_column(label, justify="right", overflow="fold")
    if len(summaries) == 2:
        table.add_column("change", justify="right")
    for name, values in _eval_rows(summaries):
        cells = [f"{v:.4f}" for v in values]
        if len(values) == 2:
            cells.append(f"{values[1] - values[0]:+.4f}")
        table.add_row(name, *cells)
    return table


def record_fatal(message: str) -> None:
    """Write the error that ends a run into its run.log (if a run directory's log is open), once;
    the console has already shown it."""
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None))
            handler.close()
            logger.removeHandler(handler)
